package array_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// newStore opens a zeroed file of size bytes as the array's store: inline,
// since sysio's workers would outlive a synctest bubble.
func newStore(t *testing.T, size int64) backends.Backend {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.WriteFile(name, make([]byte, size), 0o600))
	f, err := backends.OpenFile(name, backends.FileOptions{Inline: true})
	require.NoError(t, err)
	return f
}

func TestArrayConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*array.ArrayConfig)
		want string
	}{
		{func(c *array.ArrayConfig) { c.Mode = "symmetric" }, "want alua or ap"},
		{func(c *array.ArrayConfig) { c.Implicit, c.Explicit = false, false }, "implicit or explicit"},
		{func(c *array.ArrayConfig) { c.Mode = array.ModeAP }, "explicit (STPG) needs mode alua"},
		{func(c *array.ArrayConfig) { c.Controllers[1].TPG = 1 }, "both have TPG 1"},
		{func(c *array.ArrayConfig) { c.Controllers[1].Ports = []uint16{2} }, "port 2 belongs to both"},
		{func(c *array.ArrayConfig) { c.Owner = "C" }, "owner \"C\" is not a controller"},
		{func(c *array.ArrayConfig) { c.Controllers = nil }, "no controllers"},
	} {
		cfg := array.DefaultLabArray()
		cfg.Controllers = append([]array.ControllerConfig(nil), cfg.Controllers...)
		tc.mod(&cfg)
		_, err := array.New(cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	arr, err := array.New(array.DefaultLabArray())
	require.NoError(t, err)
	for i, err := range []error{
		arr.FailController("C"), arr.RestoreController("A"), arr.TransferOwnership("A"),
		arr.SetTPGState(1, scsi.Unavailable), arr.ForceTPGState(9, scsi.Standby), arr.ForceTPGState(1, scsi.Offline),
	} {
		assert.Error(t, err, "bad array command %d succeeded", i)
	}
	_, err = arr.NewPort(9, newStore(t, 4096))
	assert.Error(t, err, "NewPort accepted an unknown port")
	b := arr.Port(9, newStore(t, 4096))
	_, err = b.ReadAt(context.Background(), make([]byte, 1), 0)
	assert.Equal(t, ioerr.ClassPathFailure, ioerr.ClassOf(err), "unknown port read: %v", err)
}

func TestPortInquiryAndCapabilities(t *testing.T) {
	arr, err := array.New(array.DefaultLabArray())
	require.NoError(t, err)
	p := arr.Port(3, newStore(t, 1<<20))
	defer p.Close()
	q, err := p.(backends.Inquirer).Inquiry(context.Background())
	require.NoError(t, err)
	cfg := arr.Config()
	assert.Equal(t, "MPATHFS", q.Vendor)
	assert.Equal(t, "ALUA ARRAY", q.Model)
	assert.Equal(t, cfg.WWID, q.WWID)
	assert.Equal(t, 3, q.TPGS)
	assert.Equal(t, "file", q.Transport)
	for _, c := range []backends.Capability{backends.CapDiscard, backends.CapWriteZeroes, backends.CapProbe, backends.CapInquiry} {
		assert.True(t, backends.Can(p, c), "port cannot %s", c)
	}
	_, ok := backends.As[*backends.File](p)
	assert.True(t, ok, "Unwrap does not reach the file")
	pi, err := p.(scsi.Reporter).PortInfo(context.Background())
	require.NoError(t, err)
	assert.Equal(t, scsi.PortInfo{TPG: 2, RelativePort: 3, TPGS: 3}, pi)
	_, ok = p.(scsi.Setter)
	assert.True(t, ok, "an ALUA port offers Set Target Port Groups")
	_, ok = p.(scsi.Trespasser)
	assert.True(t, ok, "a port offers trespass")
}

// TestPortConformance: an AO port (after its power-on unit attention) keeps
// the backend contract.
func TestPortConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		arr, err := array.New(array.DefaultLabArray())
		require.NoError(t, err)
		p := arr.Port(1, newStore(t, size))
		_, err = p.ReadAt(context.Background(), make([]byte, 1), 0)
		require.ErrorIs(t, err, array.ErrUnitAttention, "the first command reports power-on")
		return p
	})
}

package array

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// Three I_T nexuses: A and C through controller A's ports 1 and 2, B
// through controller B's port 3.
var (
	nxA = scsi.Nexus{Initiator: "iqn.2026-01.test:a", ISID: "400001370000", TargetPort: 1, TPG: 1}
	nxB = scsi.Nexus{Initiator: "iqn.2026-01.test:b", ISID: "400001370001", TargetPort: 3, TPG: 2}
	nxC = scsi.Nexus{Initiator: "iqn.2026-01.test:c", ISID: "400001370002", TargetPort: 2, TPG: 1}
)

const luBlocks = 2048 // 1 MiB of 512-byte blocks

// luStore is a zeroed file store, inline (no worker goroutines: synctest
// bubbles and the leak check stay clean).
func luStore(t testing.TB, size int64) backends.Backend {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.WriteFile(name, make([]byte, size), 0o600))
	f, err := backends.OpenFile(name, backends.FileOptions{Inline: true})
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

type env struct {
	t   testing.TB
	h   *Handler
	arr *Array
	dir string
}

// newEnv builds a handler with one LU over the default lab array (no
// transition period unless the config says otherwise).
func newEnv(t testing.TB, mod ...func(*ArrayConfig, *LUConfig)) *env {
	t.Helper()
	ac := DefaultLabArray()
	ac.Transition, ac.ANOLatency, ac.ANOBandwidth = 0, 0, 0
	dir := t.TempDir()
	lc := LUConfig{LUN: 0, PRFile: filepath.Join(dir, "store.pr")}
	for _, m := range mod {
		m(&ac, &lc)
	}
	arr, err := New(ac)
	require.NoError(t, err)
	h, err := NewHandler(HandlerConfig{Array: arr, TargetName: "iqn.2026-01.test:array", LUs: []LUConfig{lc}}, luStore(t, luBlocks*512))
	require.NoError(t, err)
	return &env{t: t, h: h, arr: arr, dir: dir}
}

// do runs one command on LU 0.
func (e *env) do(n scsi.Nexus, cdb []byte, out []byte) scsi.Response {
	return e.h.Execute(context.Background(), &scsi.Command{Nexus: n, LUN: 0, CDB: cdb, DataOut: out, DataInLen: 1 << 24})
}

// ready clears the nexus's unit attentions with TEST UNIT READY, as
// initiators do after login.
func (e *env) ready(ns ...scsi.Nexus) {
	for _, n := range ns {
		for i := 0; i < 10; i++ {
			r := e.do(n, make([]byte, 6), nil)
			if r.Status != scsi.StatusCheckCondition || senseOf(e.t, r).Key != ioerr.SenseUnitAttention {
				break
			}
		}
	}
}

func senseOf(t testing.TB, r scsi.Response) ioerr.Sense {
	t.Helper()
	require.Equal(t, scsi.StatusCheckCondition, r.Status, "want CHECK CONDITION")
	s, _, err := scsi.ParseSense(r.Sense)
	require.NoError(t, err)
	return s
}

func requireGood(t testing.TB, r scsi.Response, what string) {
	t.Helper()
	if r.Status != scsi.StatusGood {
		s, _, _ := scsi.ParseSense(r.Sense)
		require.Failf(t, "command failed", "%s: status 0x%02x sense %s", what, uint8(r.Status), s)
	}
}

func requireSense(t testing.TB, r scsi.Response, want ioerr.Sense, what string) {
	t.Helper()
	require.Equal(t, scsi.StatusCheckCondition, r.Status, "%s: status", what)
	got, _, err := scsi.ParseSense(r.Sense)
	require.NoError(t, err)
	require.Equal(t, want, got, "%s: sense %s, want %s", what, got, want)
}

// CDB builders for the tests.

func cdbRW16(op byte, lba uint64, blocks uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbRW10(op byte, lba uint32, blocks uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func cdbCAW(lba uint64, blocks byte) []byte {
	c := make([]byte, 16)
	c[0] = scsi.OpCompareAndWrite
	binary.BigEndian.PutUint64(c[2:], lba)
	c[13] = blocks
	return c
}

func block(b byte) []byte {
	p := make([]byte, 512)
	for i := range p {
		p[i] = b
	}
	return p
}

// PR helpers.

func (e *env) prOut(n scsi.Nexus, sa byte, typ scsi.PRType, p scsi.PROutParams) scsi.Response {
	b := p.Encode()
	return e.do(n, scsi.CDBPersistentReserveOut(sa, typ, uint32(len(b))), b)
}

func (e *env) register(n scsi.Nexus, key uint64) {
	e.t.Helper()
	requireGood(e.t, e.prOut(n, scsi.PROutRegister, 0, scsi.PROutParams{SAKey: key}), "register")
}

func (e *env) readKeys(n scsi.Nexus) (gen uint32, keys []uint64) {
	e.t.Helper()
	r := e.do(n, scsi.CDBPersistentReserveIn(scsi.PRInReadKeys, 4096), nil)
	requireGood(e.t, r, "read keys")
	gen = binary.BigEndian.Uint32(r.DataIn)
	l := binary.BigEndian.Uint32(r.DataIn[4:])
	for i := 0; i < int(l)/8; i++ {
		keys = append(keys, binary.BigEndian.Uint64(r.DataIn[8+8*i:]))
	}
	return gen, keys
}

// readReservation returns the holder's key and type (0, 0: none).
func (e *env) readReservation(n scsi.Nexus) (uint64, scsi.PRType) {
	e.t.Helper()
	r := e.do(n, scsi.CDBPersistentReserveIn(scsi.PRInReadReservation, 4096), nil)
	requireGood(e.t, r, "read reservation")
	if binary.BigEndian.Uint32(r.DataIn[4:]) == 0 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(r.DataIn[8:]), scsi.PRType(r.DataIn[21] & 0x0f)
}

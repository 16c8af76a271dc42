package array

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/scsi"
)

func quickCmd(n scsi.Nexus, lun uint64, cdb []byte) *scsi.Command {
	return &scsi.Command{Nexus: n, LUN: lun, CDB: cdb}
}

// Quick (the transport's fast path) holds for READ and WRITE through an
// active/optimized port while no fault rule is armed, and for nothing that
// may wait: other commands, a fault rule (delay, hang), a non-optimized
// port with an interconnect penalty, a passive port.
func TestQuick(t *testing.T) {
	e := newEnv(t, func(ac *ArrayConfig, _ *LUConfig) { ac.ANOLatency = 2e6 })
	w, r := cdbRW10(scsi.OpWrite10, 0, 1, 0), cdbRW16(scsi.OpRead16, 0, 1, 0)
	assert.True(t, e.h.Quick(nxA, quickCmd(nxA, 0, w)), "WRITE through the AO port")
	assert.True(t, e.h.Quick(nxA, quickCmd(nxA, 0, r)), "READ through the AO port")
	assert.False(t, e.h.Quick(nxA, quickCmd(nxA, 0, make([]byte, 6))), "TEST UNIT READY is not on the fast path")
	assert.False(t, e.h.Quick(nxA, quickCmd(nxA, 0, []byte{0x5f, 0x05, 0, 0, 0, 0, 0, 0, 24, 0})), "PERSISTENT RESERVE OUT may wait for other commands")
	assert.False(t, e.h.Quick(nxA, quickCmd(nxA, 5, w)), "a LUN the array lacks")
	assert.False(t, e.h.Quick(nxB, quickCmd(nxB, 0, w)), "the ANO port adds a penalty: %v", e.h.port(nxB.TargetPort).state)

	id, err := e.h.AddFault(FaultRule{Ops: []string{"read"}, Hang: true})
	require.NoError(t, err)
	assert.False(t, e.h.Quick(nxA, quickCmd(nxA, 0, w)), "an armed fault rule may delay or hang any command")
	require.True(t, e.h.RemoveFault(id))
	assert.True(t, e.h.Quick(nxA, quickCmd(nxA, 0, w)))

	e2 := newEnv(t)
	assert.True(t, e2.h.Quick(nxB, quickCmd(nxB, 0, w)), "an ANO port without a penalty: %v", e2.h.port(nxB.TargetPort).state)
}

// deviceStore hides the file store's Inline: a store that may wait for a
// device.
type deviceStore struct{ backends.Backend }

func TestQuickNeedsAStoreInMemory(t *testing.T) {
	arr, err := New(DefaultLabArray())
	require.NoError(t, err)
	h, err := NewHandler(HandlerConfig{Array: arr, TargetName: "iqn.2026-01.test:array", LUs: []LUConfig{{LUN: 0}}},
		deviceStore{luStore(t, luBlocks*512)})
	require.NoError(t, err)
	assert.False(t, h.Quick(nxA, quickCmd(nxA, 0, cdbRW10(scsi.OpWrite10, 0, 1, 0))))
}

package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/freezeproxy"
	"github.com/mpathfs/mpathfs/internal/tgtd"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

const testIQN = "iqn.2026-01.io.mpathfs.test:init"

func cdbRW16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// tgtSession starts a tgtd with one 64 MiB LU 1 and logs in to it.
func tgtSession(t *testing.T, mod func(*InitiatorConfig, *tgtd.Target)) (*Session, *tgtd.Target) {
	t.Helper()
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-01.io.mpathfs.test:tgt")
	tg.AddLU(1, 64<<20)
	cfg := InitiatorConfig{Address: d.Addr, TargetName: tg.IQN, InitiatorName: testIQN}
	if mod != nil {
		mod(&cfg, tg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, tg
}

// readCapacity runs READ CAPACITY(16), retrying the power-on unit attention.
func readCapacity(t *testing.T, s *Session) (blocks uint64, bs uint32) {
	t.Helper()
	buf := make([]byte, 32)
	cdb := make([]byte, 16)
	cdb[0], cdb[1] = 0x9e, 0x10
	binary.BigEndian.PutUint32(cdb[10:], 32)
	for range 3 {
		r, err := s.Do(context.Background(), &Task{LUN: 1, CDB: cdb, DataIn: buf})
		require.NoError(t, err)
		if r.Status == scsi.StatusGood {
			require.Equal(t, 32, r.InLen)
			return binary.BigEndian.Uint64(buf) + 1, binary.BigEndian.Uint32(buf[8:])
		}
		require.Equal(t, scsi.StatusCheckCondition, r.Status, "READ CAPACITY status")
	}
	t.Fatal("READ CAPACITY kept failing")
	return 0, 0
}

// roundTrip writes random data of many sizes from many goroutines at once
// (pipelined, past FirstBurstLength so R2Ts come) and reads it back.
func roundTrip(t *testing.T, s *Session) {
	t.Helper()
	blocks, bs := readCapacity(t, s)
	require.Equal(t, uint64(64<<20)/uint64(bs), blocks)
	sizes := []int{512, 4096, 65536, 300 << 10, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Go(func() {
			n := sizes[i%len(sizes)]
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(rand.IntN(256))
			}
			lba := uint64(i) * (2 << 20) / uint64(bs)
			r, err := s.Do(context.Background(), &Task{LUN: 1, CDB: cdbRW16(0x8a, lba, uint32(n)/bs), DataOut: data, Mutating: true})
			if err != nil || r.Status != scsi.StatusGood {
				errs <- errors.Join(err, errors.New("write status "+string(rune('0'+r.Status))))
				return
			}
			back := make([]byte, n)
			r, err = s.Do(context.Background(), &Task{LUN: 1, CDB: cdbRW16(0x88, lba, uint32(n)/bs), DataIn: back})
			if err != nil || r.Status != scsi.StatusGood || r.InLen != n {
				errs <- errors.Join(err, errors.New("read failed"))
				return
			}
			if !bytes.Equal(back, data) {
				errs <- errors.New("data read back differs from data written")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestInitiatorTgtRoundTrip(t *testing.T) {
	s, _ := tgtSession(t, nil)
	p, ok := s.Params()
	require.True(t, ok)
	require.False(t, p.HeaderDigest)
	roundTrip(t, s)
	require.NoError(t, s.Ping(context.Background()))
}

func TestInitiatorTgtDigests(t *testing.T) {
	s, _ := tgtSession(t, func(c *InitiatorConfig, tg *tgtd.Target) {
		tg.Set("HeaderDigest", "CRC32C,None")
		tg.Set("DataDigest", "CRC32C,None")
		c.HeaderDigest, c.DataDigest = true, true
	})
	p, _ := s.Params()
	require.True(t, p.HeaderDigest)
	require.True(t, p.DataDigest)
	roundTrip(t, s)
}

func TestInitiatorTgtCHAP(t *testing.T) {
	s, _ := tgtSession(t, func(c *InitiatorConfig, tg *tgtd.Target) {
		tg.CHAP("alice", "secretsecret12", "", "")
		c.CHAPUser, c.CHAPSecret = "alice", "secretsecret12"
	})
	readCapacity(t, s)
}

func TestInitiatorTgtMutualCHAP(t *testing.T) {
	s, _ := tgtSession(t, func(c *InitiatorConfig, tg *tgtd.Target) {
		tg.CHAP("alice", "secretsecret12", "target1", "tsecretsecret3")
		c.CHAPUser, c.CHAPSecret = "alice", "secretsecret12"
		c.MutualUser, c.MutualSecret = "target1", "tsecretsecret3"
	})
	readCapacity(t, s)
}

func TestInitiatorTgtLoginRefused(t *testing.T) {
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-01.io.mpathfs.test:tgt")
	tg.AddLU(1, 1<<20)
	tg.CHAP("alice", "secretsecret12", "target1", "tsecretsecret3")
	ctx := context.Background()
	cases := []struct {
		name   string
		cfg    InitiatorConfig
		status uint16
	}{
		{"wrong secret", InitiatorConfig{TargetName: tg.IQN, CHAPUser: "alice", CHAPSecret: "wrongwrongwrong"}, LoginAuthFailed},
		{"no CHAP", InitiatorConfig{TargetName: tg.IQN}, 0},
		{"no such target", InitiatorConfig{TargetName: "iqn.2026-01.io.mpathfs.test:nothere"}, LoginNotFound},
		{"target lies in mutual CHAP", InitiatorConfig{TargetName: tg.IQN, CHAPUser: "alice", CHAPSecret: "secretsecret12", MutualUser: "target1", MutualSecret: "notthesecret"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Address, c.cfg.InitiatorName, c.cfg.LoginTimeout = d.Addr, testIQN, 5*time.Second
			_, err := Dial(ctx, c.cfg)
			require.Error(t, err)
			var le *LoginError
			require.ErrorAs(t, err, &le)
			if c.status != 0 {
				require.Equal(t, c.status, le.Status, "%v", err)
				require.Equal(t, ioerr.ClassDeviceError, ioerr.ClassOf(err))
			}
		})
	}
}

// TestInitiatorTgtFenceFrozen: the network to tgtd swallows everything
// while a write is out. The write fails with a PendingError that neither
// ABORT TASK nor LUN RESET can settle (they are swallowed too); only the
// session reinstatement after the network heals settles it, and the
// session carries I/O again.
func TestInitiatorTgtFenceFrozen(t *testing.T) {
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-01.io.mpathfs.test:tgt")
	tg.AddLU(1, 8<<20)
	px := freezeproxy.Start(t, "tcp", "127.0.0.1:0", d.Addr)
	s, err := Dial(context.Background(), InitiatorConfig{Address: px.Addr(), TargetName: tg.IQN, InitiatorName: testIQN,
		TMFTimeout: 300 * time.Millisecond, LoginTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer s.Close()
	readCapacity(t, s)
	px.FreezeExisting()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = s.Do(ctx, &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 8), DataOut: bytes.Repeat([]byte{7}, 4096), Mutating: true})
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, ioerr.ClassPathFailure, ioerr.ClassOf(err))
	require.Eventually(t, func() bool { return s.orphanCount() == 1 }, 10*time.Second, 10*time.Millisecond)
	select {
	case <-pe.Settled():
		t.Fatal("settled while the target may still hold the write")
	default:
	}
	require.Contains(t, pe.WaitingFor(), "same ISID")
	require.NoError(t, s.Reinstate(context.Background()))
	select {
	case <-pe.Settled():
	default:
		t.Fatal("not settled after the reinstatement")
	}
	readCapacity(t, s)
	data := bytes.Repeat([]byte{9}, 4096)
	r, err := s.Do(context.Background(), &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 8), DataOut: data, Mutating: true})
	require.NoError(t, err)
	require.Equal(t, scsi.StatusGood, r.Status)
	back := make([]byte, 4096)
	_, err = s.Do(context.Background(), &Task{LUN: 1, CDB: cdbRW16(0x88, 0, 8), DataIn: back})
	require.NoError(t, err)
	require.Equal(t, data, back)
}

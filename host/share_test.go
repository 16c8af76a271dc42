package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/mpath"
)

func shareStore(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lun.img")
	require.NoError(t, os.WriteFile(p, make([]byte, 64<<10), 0o600))
	return p
}

func holder(dev, mode string) mpath.ShareHolder {
	return mpath.ShareHolder{Host: "host-" + dev, PID: os.Getpid(), Mountpoint: "/mnt/" + dev, Device: dev, Mode: mode}
}

// lockOf makes a device's share lock and locks one URI with it.
func lockOf(t *testing.T, uri, dev, mode string) (*shareLock, error) {
	t.Helper()
	s := newShareLock(holder(dev, mode))
	t.Cleanup(func() { s.release() })
	_, _, err := s.add(uri)
	return s, err
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestShareExclusive: a second device on a store held exclusively is
// refused with an error naming the holder (host, pid, mountpoint,
// device); once the first lets go, the second gets the store, and nothing
// of the first is left open.
func TestShareExclusive(t *testing.T) {
	store := shareStore(t)
	fds := openFDs(t)
	a, err := lockOf(t, "file://"+store, "a", mpath.ShareExclusive)
	require.NoError(t, err)

	_, err = lockOf(t, store, "b", mpath.ShareExclusive)
	require.Error(t, err)
	var se *ShareError
	require.True(t, errors.As(err, &se), "a *ShareError: %v", err)
	assert.ErrorIs(t, err, ErrRefused)
	assert.Equal(t, mpath.ShareExclusive, se.Held)
	require.Len(t, se.Holders, 1)
	assert.Equal(t, "host-a", se.Holders[0].Host)
	msg := err.Error()
	for _, want := range []string{"device b", "store " + store, "held exclusively by host host-a", fmt.Sprintf("pid %d", os.Getpid()), "mounted at /mnt/a", "--multi-writer"} {
		assert.Contains(t, msg, want)
	}

	st := a.status()
	assert.Equal(t, mpath.ShareExclusive, st.Mode)
	require.Len(t, st.Holders, 1)
	assert.True(t, st.Holders[0].Self)
	assert.Equal(t, store, st.Holders[0].Store)

	require.NoError(t, a.release())
	assert.Equal(t, fds, openFDs(t), "releasing closes the lock's descriptor")
	b, err := lockOf(t, store, "b", mpath.ShareExclusive)
	require.NoError(t, err, "the store is free once the holder let go")
	require.NoError(t, b.release())
	assert.Equal(t, fds, openFDs(t))
	_, err = unix.Getxattr(store, holderXattr+"0", make([]byte, 64))
	assert.Error(t, err, "the holder record goes with the lock")
}

// TestShareMultiWriter: eight multi-writer devices share a store in slots
// 1..8; the ninth is refused naming all eight; an exclusive device is
// refused by them, and a multi-writer one by an exclusive holder.
func TestShareMultiWriter(t *testing.T) {
	store := shareStore(t)
	var held []*shareLock
	for i := 1; i <= mpath.MaxWriters; i++ {
		s, err := lockOf(t, store, fmt.Sprintf("m%d", i), mpath.ShareMultiWriter)
		require.NoError(t, err, "writer %d", i)
		require.Len(t, s.stores, 1)
		assert.Equal(t, i, s.stores[0].slot)
		held = append(held, s)
	}
	_, err := lockOf(t, store, "m9", mpath.ShareMultiWriter)
	require.Error(t, err)
	var se *ShareError
	require.True(t, errors.As(err, &se))
	assert.Len(t, se.Holders, mpath.MaxWriters)
	assert.Contains(t, err.Error(), "already has 8 writers")
	for i := 1; i <= mpath.MaxWriters; i++ {
		assert.Contains(t, err.Error(), fmt.Sprintf("host host-m%d ", i))
	}

	_, err = lockOf(t, store, "x", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shared by 8 multi-writer host(s)")

	st := held[2].status()
	assert.Equal(t, mpath.ShareMultiWriter, st.Mode)
	assert.Len(t, st.Holders, mpath.MaxWriters, "status shows every holder")
	assert.True(t, st.Holders[2].Self)

	// A slot freed is taken by the next writer.
	require.NoError(t, held[4].release())
	s, err := lockOf(t, store, "m9", mpath.ShareMultiWriter)
	require.NoError(t, err)
	assert.Equal(t, 5, s.stores[0].slot)
	for _, h := range held {
		h.release()
	}
	s.release()

	_, err = lockOf(t, store, "x", mpath.ShareExclusive)
	require.NoError(t, err)
	_, err = lockOf(t, store, "m1", mpath.ShareMultiWriter)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held exclusively by host host-x")
	assert.Contains(t, err.Error(), "a multi-writer host shares a store only with other multi-writer hosts")
}

// TestShareOneLockPerStore: paths of one device reaching one file through
// several names (file URI, plain path, symlink, hard link) take one lock,
// and do not refuse each other; NBD and iSCSI paths take none and say why.
func TestShareOneLockPerStore(t *testing.T) {
	store := shareStore(t)
	dir := filepath.Dir(store)
	sym, hard := filepath.Join(dir, "sym.img"), filepath.Join(dir, "hard.img")
	require.NoError(t, os.Symlink(store, sym))
	require.NoError(t, os.Link(store, hard))
	s := newShareLock(holder("d0", mpath.ShareExclusive))
	defer s.release()
	for _, u := range []string{"file://" + store + "?direct=1", store, sym, "file://" + hard} {
		_, none, err := s.add(u)
		require.NoError(t, err, u)
		assert.Empty(t, none)
	}
	assert.Len(t, s.stores, 1)
	for _, u := range []string{"nbd://127.0.0.1:1/x", "nbd+unix:///x?socket=/s", "iscsi://127.0.0.1/iqn.2026-01.x:t/0", "file://" + store + "?ro=1"} {
		sl, none, err := s.add(u)
		require.NoError(t, err)
		assert.Nil(t, sl)
		assert.Contains(t, none, u)
	}
	st := s.status()
	require.Len(t, st.Unlocked, 4)
	assert.Contains(t, st.Unlocked[0], "NBD export carries no lock")
	assert.Contains(t, st.Unlocked[2], "iSCSI LU takes no lock but the one the device keeps in the LU")
}

// TestShareRecordFallback: where the store keeps no user extended
// attributes, the holder record goes to a file under HolderDir, and the
// refused host still names the holder; releasing removes it.
func TestShareRecordFallback(t *testing.T) {
	dir, old, oldSet := t.TempDir(), HolderDir, setXattr
	HolderDir = filepath.Join(dir, "holders")
	setXattr = func(int, string, []byte, int) error { return unix.ENOTSUP }
	defer func() { HolderDir, setXattr = old, oldSet }()
	store := shareStore(t)
	a, err := lockOf(t, store, "a", mpath.ShareExclusive)
	require.NoError(t, err)
	rec := a.stores[0].record
	require.True(t, strings.HasPrefix(rec, HolderDir), "record in %q", rec)
	_, err = os.Stat(rec)
	require.NoError(t, err)
	_, err = lockOf(t, store, "b", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held exclusively by host host-a")
	a.release()
	_, err = os.Stat(rec)
	assert.True(t, os.IsNotExist(err), "the record goes with the lock: %v", err)
}

// TestShareStaleRecordIgnored: a record without a lock (its holder
// crashed) is not believed; a lock without a record is named as
// unrecorded.
func TestShareStaleRecordIgnored(t *testing.T) {
	store := shareStore(t)
	if err := unix.Setxattr(store, holderXattr+"0", []byte(`{"host":"ghost","pid":1}`), 0); err != nil {
		t.Skipf("the temporary directory keeps no user extended attributes: %v", err)
	}
	_, err := lockOf(t, store, "a", mpath.ShareExclusive)
	require.NoError(t, err, "a stale record holds nothing")
	require.NoError(t, unix.Removexattr(store, holderXattr+"0"))
	_, err = lockOf(t, store, "b", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "an unrecorded host")
}

// TestHostShare: two hosts build a device on one file store: the second
// is refused naming the first, with a lock-refused event; status shows
// the mode and the holder; closing the first lets a third in.
func TestHostShare(t *testing.T) {
	store := shareStore(t)
	dc := DeviceConfig{Name: "d0", CheckInterval: Duration(3600e9), Paths: []PathConfig{{URI: "file://" + store}, {URI: store}}}
	a := New(Options{Mountpoint: "/mnt/a", Name: "host-a"})
	require.NoError(t, a.Build(context.Background(), []DeviceConfig{dc}))
	sh, err := a.Sharing("d0")
	require.NoError(t, err)
	require.NotNil(t, sh)
	assert.Equal(t, mpath.ShareExclusive, sh.Mode)
	require.Len(t, sh.Holders, 1)
	assert.Equal(t, "/mnt/a", sh.Holders[0].Mountpoint)

	events := &mpath.Events{}
	sub := events.Subscribe(64)
	defer sub.Close()
	b := New(Options{Mountpoint: "/mnt/b", Events: events})
	err = b.Build(context.Background(), []DeviceConfig{dc})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held exclusively by host host-a (")
	assert.Contains(t, err.Error(), "mounted at /mnt/a")
	b.Close()
	ev := nextEvent(t, sub, "lock-refused")
	assert.Contains(t, ev.Reason, "held exclusively")

	mw := dc
	mw.MultiWriter = true
	c := New(Options{})
	err = c.Build(context.Background(), []DeviceConfig{mw})
	require.Error(t, err, "a multi-writer host is refused by an exclusive one")
	c.Close()

	require.NoError(t, a.Close())
	c = New(Options{Events: events})
	require.NoError(t, c.Build(context.Background(), []DeviceConfig{mw}))
	ev = nextEvent(t, sub, "lock-taken")
	assert.Contains(t, ev.Reason, "writer slot 1 of 8")
	d := New(Options{})
	require.NoError(t, d.Build(context.Background(), []DeviceConfig{mw}), "two multi-writer hosts share")
	sh, _ = d.Sharing("d0")
	assert.Len(t, sh.Holders, 2)
	require.NoError(t, c.Close())
	require.NoError(t, d.Close())
}

// nextEvent returns the next event of a kind (the host publishes others
// too).
func nextEvent(t *testing.T, sub *mpath.Subscription, kind string) mpath.Event {
	t.Helper()
	for {
		select {
		case ev := <-sub.C:
			if ev.Kind == kind {
				return ev
			}
		default:
			t.Fatalf("no %s event", kind)
		}
	}
}

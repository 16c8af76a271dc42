package nmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

func TestClassifyError(t *testing.T) {
	sense := func(s mpath.Sense) error {
		return &mpath.Error{Class: mpath.ClassNone, Op: "read", Sense: &s, Err: errors.New("check condition")}
	}
	tests := []struct {
		name string
		err  error
		want mpath.Class
	}{
		{"nil", nil, mpath.ClassNone},
		// Errors that carry a class keep it.
		{"classified path-failure", mpath.NewError(mpath.ClassPathFailure, "read", nil), mpath.ClassPathFailure},
		{"classified retryable", mpath.NewError(mpath.ClassRetryable, "read", nil), mpath.ClassRetryable},
		{"classified not-ready", mpath.NewError(mpath.ClassNotReady, "read", nil), mpath.ClassNotReady},
		{"classified device-error", mpath.NewError(mpath.ClassDeviceError, "write", nil), mpath.ClassDeviceError},
		{"classified permanent-loss", mpath.NewError(mpath.ClassPermanentLoss, "read", nil), mpath.ClassPermanentLoss},
		{"wrapped sentinel retryable", fmt.Errorf("nbd: %w", mpath.ErrRetryable), mpath.ClassRetryable},
		{"wrapped sentinel device-error", fmt.Errorf("x: %w", mpath.ErrDeviceError), mpath.ClassDeviceError},
		{"class beats the errno inside", mpath.NewError(mpath.ClassDeviceError, "read", syscall.ECONNRESET), mpath.ClassDeviceError},
		{"class beats sense", &mpath.Error{Class: mpath.ClassRetryable, Sense: &mpath.SenseUnrecoveredRead}, mpath.ClassRetryable},
		// Sense data decides next.
		{"sense ALUA transitioning", sense(mpath.SenseALUATransitioning), mpath.ClassRetryable},
		{"sense ALUA standby", sense(mpath.SenseALUAStandby), mpath.ClassNotReady},
		{"sense ALUA unavailable", sense(mpath.SenseALUAUnavailable), mpath.ClassNotReady},
		{"sense medium error", sense(mpath.SenseUnrecoveredRead), mpath.ClassDeviceError},
		{"sense LU not supported", sense(mpath.SenseLUNotSupported), mpath.ClassPermanentLoss},
		{"sense unit attention", sense(mpath.SenseAccessChanged), mpath.ClassRetryable},
		{"sense wrapped", fmt.Errorf("outer: %w", sense(mpath.SenseALUAStandby)), mpath.ClassNotReady},
		// Errno values, bare and wrapped the way os and net wrap them.
		{"EIO", syscall.EIO, mpath.ClassPathFailure},
		{"ECONNREFUSED", syscall.ECONNREFUSED, mpath.ClassPathFailure},
		{"ECONNRESET", syscall.ECONNRESET, mpath.ClassPathFailure},
		{"EPIPE", syscall.EPIPE, mpath.ClassPathFailure},
		{"ETIMEDOUT", syscall.ETIMEDOUT, mpath.ClassPathFailure},
		{"ENXIO", syscall.ENXIO, mpath.ClassPathFailure},
		{"EAGAIN", syscall.EAGAIN, mpath.ClassRetryable},
		{"EBUSY", syscall.EBUSY, mpath.ClassRetryable},
		{"EINTR", syscall.EINTR, mpath.ClassRetryable},
		{"ENOSPC", syscall.ENOSPC, mpath.ClassDeviceError},
		{"EDQUOT", syscall.EDQUOT, mpath.ClassDeviceError},
		{"EROFS", syscall.EROFS, mpath.ClassDeviceError},
		{"EINVAL", syscall.EINVAL, mpath.ClassDeviceError},
		{"EFBIG", syscall.EFBIG, mpath.ClassDeviceError},
		{"EOVERFLOW", syscall.EOVERFLOW, mpath.ClassDeviceError},
		{"EFAULT", syscall.EFAULT, mpath.ClassDeviceError},
		{"EOPNOTSUPP", syscall.EOPNOTSUPP, mpath.ClassDeviceError},
		{"EPERM", syscall.EPERM, mpath.ClassDeviceError},
		{"EACCES", syscall.EACCES, mpath.ClassDeviceError},
		{"ENOMEDIUM", syscall.ENOMEDIUM, mpath.ClassPermanentLoss},
		{"ESTALE", syscall.ESTALE, mpath.ClassPermanentLoss},
		{"os.PathError EIO", &os.PathError{Op: "pread", Path: "/x", Err: syscall.EIO}, mpath.ClassPathFailure},
		{"os.PathError ENOSPC", &os.PathError{Op: "pwrite", Path: "/x", Err: syscall.ENOSPC}, mpath.ClassDeviceError},
		{"net.OpError ECONNRESET", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, mpath.ClassPathFailure},
		{"net.OpError EAGAIN is retryable", &net.OpError{Op: "read", Net: "tcp", Err: syscall.EAGAIN}, mpath.ClassRetryable},
		{"net.ErrClosed", fmt.Errorf("nbd: %w", net.ErrClosed), mpath.ClassPathFailure},
		// Go errors.
		{"deadline exceeded", context.DeadlineExceeded, mpath.ClassPathFailure},
		{"EOF", io.EOF, mpath.ClassPathFailure},
		{"unexpected EOF", io.ErrUnexpectedEOF, mpath.ClassPathFailure},
		{"short write", io.ErrShortWrite, mpath.ClassPathFailure},
		{"not supported", backends.ErrNotSupported, mpath.ClassDeviceError},
		{"not supported wrapped", fmt.Errorf("discard: %w", backends.ErrNotSupported), mpath.ClassDeviceError},
		{"unknown error", errors.New("something odd"), mpath.ClassPathFailure},
	}
	for _, tc := range tests {
		if got := ClassifyError(tc.err); got != tc.want {
			t.Errorf("%s: ClassifyError(%v) = %s, want %s", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestClassifySense(t *testing.T) {
	tests := []struct {
		s    mpath.Sense
		want mpath.Class
	}{
		{sn(0x02, 0x04, 0x0a), mpath.ClassRetryable},     // ALUA transitioning
		{sn(0x02, 0x04, 0x0b), mpath.ClassNotReady},      // ALUA standby
		{sn(0x02, 0x04, 0x0c), mpath.ClassNotReady},      // ALUA unavailable
		{sn(0x02, 0x04, 0x01), mpath.ClassRetryable},     // becoming ready
		{sn(0x02, 0x04, 0x03), mpath.ClassNotReady},      // manual intervention required
		{sn(0x02, 0x04, 0x00), mpath.ClassNotReady},      // not ready, cause not reportable
		{sn(0x02, 0x3a, 0x00), mpath.ClassPermanentLoss}, // medium not present
		{sn(0x02, 0x00, 0x00), mpath.ClassNotReady},
		{sn(0x03, 0x11, 0x00), mpath.ClassDeviceError}, // unrecovered read error
		{sn(0x03, 0x0c, 0x00), mpath.ClassDeviceError}, // write error
		{sn(0x05, 0x25, 0x00), mpath.ClassPermanentLoss},
		{sn(0x05, 0x21, 0x00), mpath.ClassDeviceError}, // LBA out of range
		{sn(0x05, 0x24, 0x00), mpath.ClassDeviceError}, // invalid field in CDB
		{sn(0x06, 0x2a, 0x06), mpath.ClassRetryable},   // asymmetric access state changed
		{sn(0x06, 0x29, 0x00), mpath.ClassRetryable},   // power on, reset
		{sn(0x0b, 0x00, 0x00), mpath.ClassRetryable},   // aborted command
		{sn(0x0b, 0x47, 0x00), mpath.ClassRetryable},
		{sn(0x04, 0x44, 0x00), mpath.ClassPathFailure}, // hardware error
		{sn(0x00, 0x00, 0x00), mpath.ClassPathFailure},
	}
	for _, tc := range tests {
		if got := ClassifySense(tc.s); got != tc.want {
			t.Errorf("ClassifySense(%s) = %s, want %s", tc.s, got, tc.want)
		}
	}
}

// TestVerdictFor pins the generic action of each class.
func TestVerdictFor(t *testing.T) {
	tests := []struct {
		c     mpath.Class
		state mpath.PathState
		retry bool
	}{
		{mpath.ClassPathFailure, mpath.StateDead, true},
		{mpath.ClassRetryable, mpath.StateUnknown, true},
		{mpath.ClassNotReady, mpath.StateStandby, true},
		{mpath.ClassDeviceError, mpath.StateUnknown, false},
		{mpath.ClassPermanentLoss, mpath.StateDead, true},
	}
	for _, tc := range tests {
		v := VerdictFor(tc.c, 7*time.Millisecond)
		if v.Class != tc.c || v.State != tc.state || v.Retry != tc.retry {
			t.Errorf("VerdictFor(%s) = %+v, want state %s retry %v", tc.c, v, tc.state, tc.retry)
		}
		if (tc.c == mpath.ClassRetryable) != (v.Backoff == 7*time.Millisecond) {
			t.Errorf("VerdictFor(%s) backoff %v", tc.c, v.Backoff)
		}
	}
}

// TestSATPChecked pins what a probe result does to a path.
func TestSATPChecked(t *testing.T) {
	s, err := NewSATP(SATPDefaultAA, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from mpath.PathState
		err  error
		want mpath.PathState
	}{
		{mpath.StateDead, nil, mpath.StateActive},
		{mpath.StateStandby, nil, mpath.StateActive},
		{mpath.StateActive, syscall.ECONNREFUSED, mpath.StateDead},
		{mpath.StateActive, mpath.NewError(mpath.ClassNotReady, "probe", nil), mpath.StateStandby},
		{mpath.StateActive, syscall.EBUSY, mpath.StateActive},
		{mpath.StateDead, syscall.EBUSY, mpath.StateDead},
		{mpath.StateActive, context.DeadlineExceeded, mpath.StateDead},
	}
	for _, tc := range tests {
		p := &mpath.Path{Name: "p1"}
		p.SetState(tc.from, "test", time.Now())
		if got, reason := s.Checked(p, tc.err); got != tc.want || !strings.HasPrefix(reason, "path checker") {
			t.Errorf("Checked(%s, %v) = %s %q, want %s", tc.from, tc.err, got, reason, tc.want)
		}
	}
}

// TestErrorActions injects each class of error on the path an I/O takes
// and checks what the NMP does: the path's new state, whether the I/O was
// retried and where, and what the caller sees.
func TestErrorActions(t *testing.T) {
	tests := []struct {
		name      string
		inject    func(f *fakePath)
		wantP1    mpath.PathState
		wantPDL   bool
		wantErr   error // nil: the caller sees success
		wantServe string
		wantTries int
	}{
		{name: "path-failure", inject: func(f *fakePath) { f.failClass(mpath.ClassPathFailure) },
			wantP1: mpath.StateDead, wantServe: "p2", wantTries: 2},
		{name: "errno EIO", inject: func(f *fakePath) { f.failErr(&os.PathError{Op: "pwrite", Path: "/x", Err: syscall.EIO}) },
			wantP1: mpath.StateDead, wantServe: "p2", wantTries: 2},
		// A bare EIO on a path that still answers its probe is a medium
		// error: the I/O fails, the path stays (one bad block must not take
		// the device into All-Paths-Down).
		{name: "errno EIO, probe passes", inject: func(f *fakePath) {
			f.failErr(&os.PathError{Op: "pwrite", Path: "/x", Err: syscall.EIO}, "read,write")
		}, wantP1: mpath.StateActive, wantErr: mpath.ErrDeviceError, wantTries: 1},
		{name: "server EIO, probe passes", inject: func(f *fakePath) {
			f.failErr(mpath.NewError(mpath.ClassPathFailure, "", fmt.Errorf("nbd x: server error EIO: %w", syscall.EIO)), "read,write")
		}, wantP1: mpath.StateActive, wantErr: mpath.ErrDeviceError, wantTries: 1},
		{name: "medium error sense", inject: func(f *fakePath) {
			f.failErr(&mpath.Error{Sense: &mpath.SenseUnrecoveredRead, Err: errFakeFault})
		}, wantP1: mpath.StateActive, wantErr: mpath.ErrDeviceError, wantTries: 1},
		{name: "retryable once: same path", inject: func(f *fakePath) {
			f.setFault(&fakeFault{err: mpath.NewError(mpath.ClassRetryable, "", errFakeFault), times: 1})
		}, wantP1: mpath.StateActive, wantServe: "p1", wantTries: 2},
		{name: "errno EBUSY once", inject: func(f *fakePath) { f.setFault(&fakeFault{err: syscall.EBUSY, times: 2}) },
			wantP1: mpath.StateActive, wantServe: "p1", wantTries: 3},
		{name: "not-ready", inject: func(f *fakePath) { f.failClass(mpath.ClassNotReady) },
			wantP1: mpath.StateStandby, wantServe: "p2", wantTries: 2},
		{name: "ALUA standby sense", inject: func(f *fakePath) {
			f.failErr(&mpath.Error{Sense: &mpath.SenseALUAStandby, Err: errFakeFault})
		}, wantP1: mpath.StateStandby, wantServe: "p2", wantTries: 2},
		{name: "device-error", inject: func(f *fakePath) { f.failClass(mpath.ClassDeviceError) },
			wantP1: mpath.StateActive, wantErr: mpath.ErrDeviceError, wantTries: 1},
		{name: "errno ENOSPC", inject: func(f *fakePath) { f.failErr(syscall.ENOSPC) },
			wantP1: mpath.StateActive, wantErr: mpath.ErrDeviceError, wantTries: 1},
		{name: "permanent-loss", inject: func(f *fakePath) { f.failClass(mpath.ClassPermanentLoss) },
			wantP1: mpath.StateDead, wantPDL: true, wantServe: "p2", wantTries: 2},
	}
	for _, tc := range tests {
		for _, op := range []string{"write", "read"} {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					r := newRig(t, 2, testConfig(PSPFixed, map[string]string{"preferred": "p1"}))
					tc.inject(r.fake("p1"))
					buf := make([]byte, 4096)
					var err error
					if op == "write" {
						_, err = r.d.WriteAt(context.Background(), buf, 8192)
					} else {
						_, err = r.d.ReadAt(context.Background(), buf, 8192)
					}
					recs := r.records()
					if len(recs) != 1 {
						t.Fatalf("%d trace records", len(recs))
					}
					rec := recs[0]
					if tc.wantErr == nil {
						if err != nil {
							t.Fatalf("caller saw %v, want success", err)
						}
						if got := rec.Attempts[len(rec.Attempts)-1].Path; got != tc.wantServe {
							t.Errorf("served by %s, want %s (trace %+v)", got, tc.wantServe, rec)
						}
					} else {
						if !errors.Is(err, tc.wantErr) {
							t.Fatalf("caller saw %v, want %v", err, tc.wantErr)
						}
						if !strings.Contains(err.Error(), "p1") {
							t.Errorf("error %q does not name the path", err)
						}
						if r.fake("p2").reads.Load()+r.fake("p2").writes.Load() != 0 {
							t.Errorf("a device error was retried on p2")
						}
					}
					if len(rec.Attempts) != tc.wantTries {
						t.Errorf("%d attempts, want %d: %+v", len(rec.Attempts), tc.wantTries, rec.Attempts)
					}
					if got := r.state("p1"); got != tc.wantP1 {
						t.Errorf("p1 is %s, want %s", got, tc.wantP1)
					}
					if got := r.path("p1").PDL(); got != tc.wantPDL {
						t.Errorf("p1 PDL = %v, want %v", got, tc.wantPDL)
					}
					if got := r.state("p2"); got != mpath.StateActive {
						t.Errorf("p2 is %s", got)
					}
					if got := r.path("p1").Errors.Load(); got != uint64(tc.wantTries-1)+boolInt(tc.wantErr != nil) {
						t.Errorf("p1 counted %d errors", got)
					}
					r.d.Close()
				})
			})
		}
	}
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestAllPathsPDLFailsFast: with every path in permanent device loss, I/O
// fails at once (no APD wait), and keeps failing at once; a PDL path is not
// revived by the checker, only by the administrator.
func TestAllPathsPDLFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 3, testConfig(PSPRR, map[string]string{"iops": "1"}))
		for _, f := range r.fakes {
			f.failClass(mpath.ClassPermanentLoss)
		}
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		if !errors.Is(err, mpath.ErrPermanentLoss) {
			t.Fatalf("all paths PDL: %v, want a permanent-loss error", err)
		}
		if errors.Is(err, mpath.ErrAllPathsDown) {
			t.Fatalf("all paths PDL reported as APD: %v", err)
		}
		if el := time.Since(start); el != 0 {
			t.Fatalf("all paths PDL took %v, want no wait", el)
		}
		for _, p := range r.d.Paths() {
			if !p.PDL() || p.State() != mpath.StateDead {
				t.Fatalf("%s: state %s pdl %v", p.Name, p.State(), p.PDL())
			}
		}
		_, err = r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		if !errors.Is(err, mpath.ErrPermanentLoss) || time.Since(start) != 0 {
			t.Fatalf("second I/O: %v after %v", err, time.Since(start))
		}
		// The LU comes back: the checker leaves PDL paths alone.
		for _, f := range r.fakes {
			f.recover()
		}
		r.d.CheckNow()
		if got := r.states(); got != "p1=dead(pdl) p2=dead(pdl) p3=dead(pdl)" {
			t.Fatalf("after a check: %s", got)
		}
		if err := r.d.SetPathAdmin("p2", true); err != nil {
			t.Fatal(err)
		}
		if got := r.states(); got != "p1=dead(pdl) p2=active p3=dead(pdl)" {
			t.Fatalf("after admin on: %s", got)
		}
		if got := r.write(t, 0); got != "p2" {
			t.Fatalf("served by %s", got)
		}
		r.d.Close()
	})
}

// TestRetryableBounded: an error that stays retryable forever is given up
// after MaxRetries attempts, with backoff between them, and the path stays
// active.
func TestRetryableBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(PSPFixed, nil)
		cfg.MaxRetries = 5
		r := newRig(t, 2, cfg)
		r.fake("p1").failClass(mpath.ClassRetryable)
		r.fake("p2").failClass(mpath.ClassRetryable)
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		if !errors.Is(err, mpath.ErrRetryable) || !strings.Contains(err.Error(), "gave up after 6 attempts") {
			t.Fatalf("endless retryable: %v", err)
		}
		if el := time.Since(start); el != 5*10*time.Millisecond {
			t.Errorf("5 backoffs took %v, want 50ms", el)
		}
		if got := r.states(); got != "p1=active p2=active" {
			t.Errorf("states %s", got)
		}
		r.d.Close()
	})
}

func sn(key, asc, ascq uint8) mpath.Sense { return mpath.Sense{Key: key, ASC: asc, ASCQ: ascq} }

func TestMediumSuspect(t *testing.T) {
	eio := &os.PathError{Op: "pread", Path: "/x", Err: syscall.EIO}
	tests := []struct {
		name string
		op   mpath.OpKind
		err  error
		want bool
	}{
		{"pread EIO", mpath.OpRead, eio, true},
		{"pwrite EIO", mpath.OpWrite, eio, true},
		{"discard EIO", mpath.OpDiscard, eio, true},
		{"write-zeroes EIO", mpath.OpWriteZeroes, eio, true},
		{"bare EIO", mpath.OpRead, syscall.EIO, true},
		{"server EIO classified path failure", mpath.OpRead, mpath.NewError(mpath.ClassPathFailure, "read", fmt.Errorf("server error EIO: %w", syscall.EIO)), true},
		{"flush EIO belongs to no block", mpath.OpFlush, eio, false},
		{"probe EIO", mpath.OpProbe, eio, false},
		{"ECONNRESET", mpath.OpRead, syscall.ECONNRESET, false},
		{"ENOSPC", mpath.OpWrite, syscall.ENOSPC, false},
		{"already a device error", mpath.OpRead, mpath.NewError(mpath.ClassDeviceError, "read", syscall.EIO), false},
		{"retryable EIO", mpath.OpRead, mpath.NewError(mpath.ClassRetryable, "read", syscall.EIO), false},
		{"sense decides", mpath.OpRead, &mpath.Error{Sense: &mpath.SenseALUAStandby, Err: syscall.EIO}, false},
		{"timed out", mpath.OpRead, fmt.Errorf("%w: %w", context.DeadlineExceeded, syscall.EIO), false},
		{"pending write", mpath.OpWrite, &backends.PendingError{Err: eio, Done: make(chan struct{})}, false},
		{"injected path failure", mpath.OpRead, mpath.NewError(mpath.ClassPathFailure, "read", errFakeFault), false},
	}
	for _, tc := range tests {
		if got := MediumSuspect(tc.op, tc.err); got != tc.want {
			t.Errorf("%s: MediumSuspect(%s, %v) = %v, want %v", tc.name, tc.op, tc.err, got, tc.want)
		}
	}
}

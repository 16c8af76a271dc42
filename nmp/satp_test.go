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
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

func TestClassifyError(t *testing.T) {
	sense := func(s ioerr.Sense) error {
		return &ioerr.Error{Class: ioerr.ClassNone, Op: "read", Sense: &s, Err: errors.New("check condition")}
	}
	tests := []struct {
		name string
		err  error
		want ioerr.Class
	}{
		{"nil", nil, ioerr.ClassNone},
		// Errors that carry a class keep it.
		{"classified path-failure", ioerr.NewError(ioerr.ClassPathFailure, "read", nil), ioerr.ClassPathFailure},
		{"classified retryable", ioerr.NewError(ioerr.ClassRetryable, "read", nil), ioerr.ClassRetryable},
		{"classified not-ready", ioerr.NewError(ioerr.ClassNotReady, "read", nil), ioerr.ClassNotReady},
		{"classified device-error", ioerr.NewError(ioerr.ClassDeviceError, "write", nil), ioerr.ClassDeviceError},
		{"classified permanent-loss", ioerr.NewError(ioerr.ClassPermanentLoss, "read", nil), ioerr.ClassPermanentLoss},
		{"wrapped sentinel retryable", fmt.Errorf("nbd: %w", ioerr.ErrRetryable), ioerr.ClassRetryable},
		{"wrapped sentinel device-error", fmt.Errorf("x: %w", ioerr.ErrDeviceError), ioerr.ClassDeviceError},
		{"class beats the errno inside", ioerr.NewError(ioerr.ClassDeviceError, "read", syscall.ECONNRESET), ioerr.ClassDeviceError},
		{"class beats sense", &ioerr.Error{Class: ioerr.ClassRetryable, Sense: &ioerr.SenseUnrecoveredRead}, ioerr.ClassRetryable},
		// Sense data decides next.
		{"sense ALUA transitioning", sense(ioerr.SenseALUATransitioning), ioerr.ClassRetryable},
		{"sense ALUA standby", sense(ioerr.SenseALUAStandby), ioerr.ClassNotReady},
		{"sense ALUA unavailable", sense(ioerr.SenseALUAUnavailable), ioerr.ClassNotReady},
		{"sense medium error", sense(ioerr.SenseUnrecoveredRead), ioerr.ClassDeviceError},
		{"sense LU not supported", sense(ioerr.SenseLUNotSupported), ioerr.ClassPermanentLoss},
		{"sense unit attention", sense(ioerr.SenseAccessChanged), ioerr.ClassRetryable},
		{"sense wrapped", fmt.Errorf("outer: %w", sense(ioerr.SenseALUAStandby)), ioerr.ClassNotReady},
		{"sense of no error: the error decides", &ioerr.Error{Sense: &ioerr.Sense{Key: 0x01, ASC: 0x17}, Err: syscall.EBUSY}, ioerr.ClassRetryable},
		{"no sense, no cause", sense(ioerr.Sense{}), ioerr.ClassPathFailure},
		// Errno values, bare and wrapped the way os and net wrap them.
		{"EIO", syscall.EIO, ioerr.ClassPathFailure},
		{"ECONNREFUSED", syscall.ECONNREFUSED, ioerr.ClassPathFailure},
		{"ECONNRESET", syscall.ECONNRESET, ioerr.ClassPathFailure},
		{"EPIPE", syscall.EPIPE, ioerr.ClassPathFailure},
		{"ETIMEDOUT", syscall.ETIMEDOUT, ioerr.ClassPathFailure},
		{"ENXIO", syscall.ENXIO, ioerr.ClassPathFailure},
		{"EAGAIN", syscall.EAGAIN, ioerr.ClassRetryable},
		{"EBUSY", syscall.EBUSY, ioerr.ClassRetryable},
		{"EINTR", syscall.EINTR, ioerr.ClassRetryable},
		{"ENOSPC", syscall.ENOSPC, ioerr.ClassDeviceError},
		{"EDQUOT", syscall.EDQUOT, ioerr.ClassDeviceError},
		{"EROFS", syscall.EROFS, ioerr.ClassDeviceError},
		{"EINVAL", syscall.EINVAL, ioerr.ClassDeviceError},
		{"EFBIG", syscall.EFBIG, ioerr.ClassDeviceError},
		{"EOVERFLOW", syscall.EOVERFLOW, ioerr.ClassDeviceError},
		{"EFAULT", syscall.EFAULT, ioerr.ClassDeviceError},
		{"EOPNOTSUPP", syscall.EOPNOTSUPP, ioerr.ClassDeviceError},
		{"EPERM", syscall.EPERM, ioerr.ClassDeviceError},
		{"EACCES", syscall.EACCES, ioerr.ClassDeviceError},
		{"ENOMEDIUM", syscall.ENOMEDIUM, ioerr.ClassPermanentLoss},
		{"ESTALE", syscall.ESTALE, ioerr.ClassPermanentLoss},
		{"os.PathError EIO", &os.PathError{Op: "pread", Path: "/x", Err: syscall.EIO}, ioerr.ClassPathFailure},
		{"os.PathError ENOSPC", &os.PathError{Op: "pwrite", Path: "/x", Err: syscall.ENOSPC}, ioerr.ClassDeviceError},
		{"net.OpError ECONNRESET", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, ioerr.ClassPathFailure},
		{"net.OpError EAGAIN is retryable", &net.OpError{Op: "read", Net: "tcp", Err: syscall.EAGAIN}, ioerr.ClassRetryable},
		{"net.ErrClosed", fmt.Errorf("nbd: %w", net.ErrClosed), ioerr.ClassPathFailure},
		// Go errors.
		{"deadline exceeded", context.DeadlineExceeded, ioerr.ClassPathFailure},
		{"EOF", io.EOF, ioerr.ClassPathFailure},
		{"unexpected EOF", io.ErrUnexpectedEOF, ioerr.ClassPathFailure},
		{"short write", io.ErrShortWrite, ioerr.ClassPathFailure},
		{"not supported", backends.ErrNotSupported, ioerr.ClassDeviceError},
		{"not supported wrapped", fmt.Errorf("discard: %w", backends.ErrNotSupported), ioerr.ClassDeviceError},
		{"unknown error", errors.New("something odd"), ioerr.ClassPathFailure},
	}
	for _, tc := range tests {
		if got := ClassifyError(tc.err); got != tc.want {
			t.Errorf("%s: ClassifyError(%v) = %s, want %s", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestVerdictFor pins the generic action of each class.
func TestVerdictFor(t *testing.T) {
	tests := []struct {
		c     ioerr.Class
		state mpath.PathState
		retry bool
	}{
		{ioerr.ClassPathFailure, mpath.StateDead, true},
		{ioerr.ClassRetryable, mpath.StateUnknown, true},
		{ioerr.ClassNotReady, mpath.StateStandby, true},
		{ioerr.ClassDeviceError, mpath.StateUnknown, false},
		{ioerr.ClassPermanentLoss, mpath.StateDead, true},
	}
	for _, tc := range tests {
		v := VerdictFor(tc.c, 7*time.Millisecond)
		if v.Class != tc.c || v.State != tc.state || v.Retry != tc.retry {
			t.Errorf("VerdictFor(%s) = %+v, want state %s retry %v", tc.c, v, tc.state, tc.retry)
		}
		if (tc.c == ioerr.ClassRetryable) != (v.Backoff == 7*time.Millisecond) {
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
		{mpath.StateActive, ioerr.NewError(ioerr.ClassNotReady, "probe", nil), mpath.StateStandby},
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
		{name: "path-failure", inject: func(f *fakePath) { f.failClass(ioerr.ClassPathFailure) },
			wantP1: mpath.StateDead, wantServe: "p2", wantTries: 2},
		{name: "errno EIO", inject: func(f *fakePath) { f.failErr(&os.PathError{Op: "pwrite", Path: "/x", Err: syscall.EIO}) },
			wantP1: mpath.StateDead, wantServe: "p2", wantTries: 2},
		// A bare EIO on a path that still answers its probe is a medium
		// error: the I/O fails, the path stays (one bad block must not take
		// the device into All-Paths-Down).
		{name: "errno EIO, probe passes", inject: func(f *fakePath) {
			f.failErr(&os.PathError{Op: "pwrite", Path: "/x", Err: syscall.EIO}, "read,write")
		}, wantP1: mpath.StateActive, wantErr: ioerr.ErrDeviceError, wantTries: 1},
		{name: "server EIO, probe passes", inject: func(f *fakePath) {
			f.failErr(ioerr.NewError(ioerr.ClassPathFailure, "", fmt.Errorf("nbd x: server error EIO: %w", syscall.EIO)), "read,write")
		}, wantP1: mpath.StateActive, wantErr: ioerr.ErrDeviceError, wantTries: 1},
		{name: "medium error sense", inject: func(f *fakePath) {
			f.failErr(&ioerr.Error{Sense: &ioerr.SenseUnrecoveredRead, Err: errFakeFault})
		}, wantP1: mpath.StateActive, wantErr: ioerr.ErrDeviceError, wantTries: 1},
		{name: "retryable once: same path", inject: func(f *fakePath) {
			f.setFault(&fakeFault{err: ioerr.NewError(ioerr.ClassRetryable, "", errFakeFault), times: 1})
		}, wantP1: mpath.StateActive, wantServe: "p1", wantTries: 2},
		{name: "errno EBUSY once", inject: func(f *fakePath) { f.setFault(&fakeFault{err: syscall.EBUSY, times: 2}) },
			wantP1: mpath.StateActive, wantServe: "p1", wantTries: 3},
		{name: "not-ready", inject: func(f *fakePath) { f.failClass(ioerr.ClassNotReady) },
			wantP1: mpath.StateStandby, wantServe: "p2", wantTries: 2},
		{name: "ALUA standby sense", inject: func(f *fakePath) {
			f.failErr(&ioerr.Error{Sense: &ioerr.SenseALUAStandby, Err: errFakeFault})
		}, wantP1: mpath.StateStandby, wantServe: "p2", wantTries: 2},
		{name: "device-error", inject: func(f *fakePath) { f.failClass(ioerr.ClassDeviceError) },
			wantP1: mpath.StateActive, wantErr: ioerr.ErrDeviceError, wantTries: 1},
		{name: "errno ENOSPC", inject: func(f *fakePath) { f.failErr(syscall.ENOSPC) },
			wantP1: mpath.StateActive, wantErr: ioerr.ErrDeviceError, wantTries: 1},
		{name: "permanent-loss", inject: func(f *fakePath) { f.failClass(ioerr.ClassPermanentLoss) },
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
			f.failClass(ioerr.ClassPermanentLoss)
		}
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		if !errors.Is(err, ioerr.ErrPermanentLoss) {
			t.Fatalf("all paths PDL: %v, want a permanent-loss error", err)
		}
		if errors.Is(err, ioerr.ErrAllPathsDown) {
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
		if !errors.Is(err, ioerr.ErrPermanentLoss) || time.Since(start) != 0 {
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
		r.fake("p1").failClass(ioerr.ClassRetryable)
		r.fake("p2").failClass(ioerr.ClassRetryable)
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		if !errors.Is(err, ioerr.ErrRetryable) || !strings.Contains(err.Error(), "gave up after 6 attempts") {
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
		{"server EIO classified path failure", mpath.OpRead, ioerr.NewError(ioerr.ClassPathFailure, "read", fmt.Errorf("server error EIO: %w", syscall.EIO)), true},
		{"flush EIO belongs to no block", mpath.OpFlush, eio, false},
		{"probe EIO", mpath.OpProbe, eio, false},
		{"ECONNRESET", mpath.OpRead, syscall.ECONNRESET, false},
		{"ENOSPC", mpath.OpWrite, syscall.ENOSPC, false},
		{"already a device error", mpath.OpRead, ioerr.NewError(ioerr.ClassDeviceError, "read", syscall.EIO), false},
		{"retryable EIO", mpath.OpRead, ioerr.NewError(ioerr.ClassRetryable, "read", syscall.EIO), false},
		{"sense decides", mpath.OpRead, &ioerr.Error{Sense: &ioerr.SenseALUAStandby, Err: syscall.EIO}, false},
		{"timed out", mpath.OpRead, fmt.Errorf("%w: %w", context.DeadlineExceeded, syscall.EIO), false},
		{"pending write", mpath.OpWrite, &backends.PendingError{Err: eio, Done: make(chan struct{})}, false},
		{"injected path failure", mpath.OpRead, ioerr.NewError(ioerr.ClassPathFailure, "read", errFakeFault), false},
	}
	for _, tc := range tests {
		if got := MediumSuspect(tc.op, tc.err); got != tc.want {
			t.Errorf("%s: MediumSuspect(%s, %v) = %v, want %v", tc.name, tc.op, tc.err, got, tc.want)
		}
	}
}

package nmp

import (
	"context"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// BenchmarkFailoverWrite is the cost of one failover as the I/O that meets
// it sees it: a 4 KiB write fails on the preferred path (path failure), the
// SATP's verdict is reported and applied (the path dies, a new view is
// published), and the retry completes on the other path. Only that write is
// timed; bringing the path back between writes is not.
func BenchmarkFailoverWrite(b *testing.B) {
	r := newRig(b, 2, mpath.DeviceConfig{PSP: PSPFixed, PSPOptions: map[string]string{"preferred": "p1"}, CheckInterval: time.Hour})
	p1 := r.fake("p1")
	ctx := context.Background()
	buf := make([]byte, 4096)
	for b.Loop() {
		b.StopTimer()
		p1.failClass(ioerr.ClassPathFailure, "write")
		b.StartTimer()
		if _, err := r.d.WriteAt(ctx, buf, 0); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := r.d.FindPath("p1").State(); st != mpath.StateDead {
			b.Fatalf("p1 is %s after the failover, want dead", st)
		}
		p1.recover()
		if err := r.d.SetPathAdmin("p1", true); err != nil {
			b.Fatal(err)
		}
		r.drainEvents()
		b.StartTimer()
	}
}

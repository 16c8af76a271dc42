package iscsipath

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"testing"

	"github.com/mpathfs/mpathfs/internal/tgtd"
)

// BenchmarkTgt: 4 KiB random reads and writes at queue depth 1 and 32
// (goroutines sharing the session), and 1 MiB sequential writes, over one
// session to tgtd on the same host.
func BenchmarkTgt(b *testing.B) {
	d := tgtd.Start(b)
	tg := d.AddTarget(tgtIQN)
	tg.AddLU(1, 256<<20)
	u, _ := url.Parse(fmt.Sprintf("iscsi://%s/%s/1", d.Addr, tgtIQN))
	o, err := ParseURI(u)
	if err != nil {
		b.Fatal(err)
	}
	be, err := Open(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	blocks := be.Size() / 4096
	for _, c := range []struct {
		name  string
		size  int
		write bool
		qd    int
	}{
		{"read-4k-qd1", 4096, false, 1}, {"read-4k-qd32", 4096, false, 32},
		{"write-4k-qd1", 4096, true, 1}, {"write-4k-qd32", 4096, true, 32},
		{"write-1m-qd1", 1 << 20, true, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(c.size))
			one := func(buf []byte) error {
				off := rand.Int64N(blocks-int64(c.size/4096)) * 4096
				var err error
				if c.write {
					_, err = be.WriteAt(ctx, buf, off)
				} else {
					_, err = be.ReadAt(ctx, buf, off)
				}
				return err
			}
			if c.qd == 1 {
				buf := make([]byte, c.size)
				for b.Loop() {
					if err := one(buf); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(max(1, c.qd/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, c.size)
				for pb.Next() {
					if err := one(buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

package nbd

import (
	"context"
	"testing"
)

// BenchmarkHopQD1 is the NBD hop alone at queue depth 1, no FUSE: this
// client over one connection, 4 KiB reads and writes at scattered offsets
// to nbdkit's file plugin on a Unix socket. Its peer is fio's nbd engine
// (libnbd) against the same kind of server, the fio-nbd rows of
// bench/nbdfloor.sh:
//
//	go test -run '^$' -bench HopQD1 -count 3 ./backends/nbd/
//	fio --name=h --ioengine=nbd --uri='nbd+unix:///?socket=S' --rw=randwrite --bs=4k --iodepth=1 --size=800m --time_based --runtime=3
func BenchmarkHopQD1(b *testing.B) {
	s := startNbdkit(b, false, "file", sparseFile(b, 1<<30))
	for _, op := range []string{"read", "write"} {
		b.Run(op, func(b *testing.B) {
			c := openT(b, s.uri("")+"&connections=1")
			defer c.Close()
			ctx := context.Background()
			buf := make([]byte, 4096)
			var i int64
			for b.Loop() {
				off := (i * 7919 % 200000) * 4096
				i++
				var err error
				if op == "read" {
					_, err = c.ReadAt(ctx, buf, off)
				} else {
					_, err = c.WriteAt(ctx, buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

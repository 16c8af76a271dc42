// Package bench holds the benchmark drivers (run.sh, failover.sh, soak.sh,
// profile.sh), the fio job set they run (fio-suite.sh over the fio job files
// in jobs/) and Go benchmarks of the I/O path below FUSE.
//
//	go test -run '^$' -bench . -benchmem ./bench
//
// BenchmarkDeviceRead reads 4 KiB through an nmp device with one path —
// a file, or an NBD connection to nbdkit on a Unix socket — with the
// caller's context either context.Background() or a cancellable one, as
// go-fuse passes. It shows what the per-I/O deadline context costs when a
// backend selects on ctx.Done() (the NBD client does; pread does not).
package bench

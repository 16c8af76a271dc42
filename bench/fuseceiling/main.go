// Command fuseceiling is the go-fuse ceiling the fusedev benchmarks compare
// against: the least a go-fuse server can do to expose one backing file.
// It speaks go-fuse's raw protocol API (no inode tree, no Device, no error
// taxonomy) but mounts with exactly fusedev's options — fusedev.MountOptions
// and fusedev.OpenFlags of the zero fusedev.Options — so the difference to
// an mpathfs mount is what fusedev and the layers under it cost.
//
//	fuseceiling -file BACKING MOUNTPOINT
//
// The file appears as MOUNTPOINT/ceiling. Reads pread into go-fuse's buffer
// and answer with fuse.ReadResultData, writes pwrite, fsync fdatasyncs.
// SIGINT or SIGTERM unmounts (lazily if the mount stays busy).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/fusedev"
)

const (
	rootIno = 1
	fileIno = 2
	name    = "ceiling"
)

type ceilingFS struct {
	fuse.RawFileSystem
	fd   int
	size int64
	cfg  fusedev.Options
}

func (c *ceilingFS) attr(ino uint64, a *fuse.Attr) {
	a.Ino = ino
	a.Nlink = 1
	a.Owner = fuse.Owner{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if ino == rootIno {
		a.Mode = syscall.S_IFDIR | 0o755
		return
	}
	a.Mode = syscall.S_IFREG | 0o600
	a.Size = uint64(c.size)
	a.Blksize = 4096
}

func (c *ceilingFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, n string, out *fuse.EntryOut) fuse.Status {
	if h.NodeId != rootIno || n != name {
		return fuse.ENOENT
	}
	out.NodeId, out.Generation = fileIno, 1
	out.SetEntryTimeout(fusedev.EntryTimeout)
	out.SetAttrTimeout(fusedev.AttrTimeout)
	c.attr(fileIno, &out.Attr)
	return fuse.OK
}

func (c *ceilingFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.NodeId != rootIno && in.NodeId != fileIno {
		return fuse.ENOENT
	}
	out.SetTimeout(fusedev.AttrTimeout)
	c.attr(in.NodeId, &out.Attr)
	return fuse.OK
}

func (c *ceilingFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != fileIno {
		return fuse.EISDIR
	}
	out.OpenFlags = fusedev.OpenFlags(c.cfg)
	return fuse.OK
}

func (c *ceilingFS) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	off := int64(in.Offset)
	if off >= c.size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	buf = buf[:min(int64(len(buf)), c.size-off)]
	n, err := unix.Pread(c.fd, buf, off)
	if err != nil {
		return nil, fuse.ToStatus(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (c *ceilingFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, err := unix.Pwrite(c.fd, data, int64(in.Offset))
	if err != nil {
		return 0, fuse.ToStatus(err)
	}
	return uint32(n), fuse.OK
}

func (c *ceilingFS) Fsync(_ <-chan struct{}, _ *fuse.FsyncIn) fuse.Status {
	return fuse.ToStatus(unix.Fdatasync(c.fd))
}

func (c *ceilingFS) Flush(_ <-chan struct{}, _ *fuse.FlushIn) fuse.Status { return fuse.OK }

func (c *ceilingFS) Release(_ <-chan struct{}, _ *fuse.ReleaseIn) {}

func (c *ceilingFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, _ *fuse.OpenOut) fuse.Status {
	if in.NodeId != rootIno {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

func (c *ceilingFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if in.Offset == 0 {
		out.AddDirEntry(fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: fileIno, Off: 1})
	}
	return fuse.OK
}

func (c *ceilingFS) ReleaseDir(_ *fuse.ReleaseIn) {}

func (c *ceilingFS) StatFs(_ <-chan struct{}, _ *fuse.InHeader, _ *fuse.StatfsOut) fuse.Status {
	return fuse.OK
}

func main() {
	file := flag.String("file", "", "backing file (must exist, non-empty)")
	direct := flag.Bool("direct", false, "open the backing file with O_DIRECT")
	debug := flag.Bool("debug", false, "log FUSE requests")
	spliceOn := flag.Bool("splice", false, "let go-fuse try splice for read replies (its default; fusedev turns it off)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: fuseceiling -file BACKING MOUNTPOINT\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *file == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	mp := flag.Arg(0)
	flags := unix.O_RDWR
	if *direct {
		flags |= unix.O_DIRECT
	}
	fd, err := unix.Open(*file, flags, 0)
	if err != nil {
		log.Fatalf("fuseceiling: open %s: %v", *file, err)
	}
	size, err := unix.Seek(fd, 0, 2)
	if err != nil || size <= 0 {
		log.Fatalf("fuseceiling: %s: size %d, %v", *file, size, err)
	}
	if err := fusedev.CleanStale(mp); err != nil {
		log.Fatalf("fuseceiling: %v", err)
	}
	cfg := fusedev.Options{FsName: "fuseceiling", Debug: *debug}
	mo := fusedev.MountOptions(cfg)
	if *spliceOn {
		mo.DisableSplice = false
	}
	fsys := &ceilingFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fd: fd, size: size, cfg: cfg}
	srv, err := fuse.NewServer(fsys, mp, &mo)
	if err != nil {
		log.Fatalf("fuseceiling: mount %s: %v", mp, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		log.Fatalf("fuseceiling: mount %s: %v", mp, err)
	}
	log.Printf("fuseceiling: %s (%d bytes) at %s/%s", *file, size, mp, name)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	select {
	case <-served:
		return
	case s := <-sig:
		log.Printf("fuseceiling: %v: unmounting", s)
	}
	if err := srv.Unmount(); err != nil {
		log.Printf("fuseceiling: unmount: %v; detaching lazily", err)
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		log.Printf("fuseceiling: serve loop did not end")
	}
}

// Command fuse-options mounts one file-backed device through fusedev with
// the option knobs of fusedev.Options, for bench/fuse-options.sh.
//
//	fuse-options -file BACKING [-cache direct|keep-cache|page-cache]
//	    [-maxwrite N] [-maxbg N] [-no-async-dio] [-direct] MOUNTPOINT
//
// The device file is MOUNTPOINT/disk0. SIGINT or SIGTERM unmounts.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/fusedev"
)

// fileDevice is a fusedev.Device over one file backend: what the NMP adds
// on top (routing, retries) is not part of this measurement.
type fileDevice struct{ *backends.File }

var _ fusedev.Device = fileDevice{}

func (d fileDevice) Name() string { return "disk0" }

func main() {
	file := flag.String("file", "", "backing file (must exist, non-empty)")
	cache := flag.String("cache", "direct", "kernel caching mode: direct, keep-cache or page-cache")
	maxWrite := flag.Int("maxwrite", 0, "MaxWrite in bytes (0: fusedev default)")
	maxBG := flag.Int("maxbg", 0, "MaxBackground (0: fusedev default)")
	noAsync := flag.Bool("no-async-dio", false, "leave CAP_ASYNC_DIO off")
	direct := flag.Bool("direct", false, "open the backing file with O_DIRECT")
	flag.Parse()
	if *file == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fuse-options -file BACKING [flags] MOUNTPOINT")
		os.Exit(2)
	}
	o := fusedev.Options{MaxWrite: *maxWrite, MaxBackground: *maxBG, NoAsyncDIO: *noAsync}
	switch *cache {
	case "direct":
		o.Cache = fusedev.CacheDirect
	case "keep-cache":
		o.Cache = fusedev.CacheKeep
	case "page-cache":
		o.Cache = fusedev.CachePage
	default:
		log.Fatalf("fuse-options: unknown -cache %q", *cache)
	}
	f, err := backends.OpenFile(*file, backends.FileOptions{Direct: *direct})
	if err != nil {
		log.Fatalf("fuse-options: %v", err)
	}
	mp := flag.Arg(0)
	if err := fusedev.CleanStale(mp); err != nil {
		log.Fatalf("fuse-options: %v", err)
	}
	s, err := fusedev.Mount(mp, []fusedev.Device{fileDevice{f}}, o)
	if err != nil {
		log.Fatalf("fuse-options: %v", err)
	}
	log.Printf("fuse-options: %s at %s/disk0 (cache %v)", *file, mp, o.Cache)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		if err := s.Unmount(); err != nil {
			log.Printf("fuse-options: %v", err)
		}
	}()
	s.Wait()
}

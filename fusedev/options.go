package fusedev

import (
	"log"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// CacheMode selects how the kernel caches the data of the device files.
type CacheMode int

const (
	// CacheDirect bypasses the kernel page cache: every read and write of
	// the device file, buffered or O_DIRECT, becomes a FUSE request
	// (FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES). The default and the
	// only mode for production: a write returns only after the device
	// acknowledged it, errors reach the writer, and there is one copy of the
	// data. Shared mmap of the device file fails with ENODEV in this mode.
	CacheDirect CacheMode = iota
	// CacheKeep lets buffered I/O go through the page cache and keeps it
	// across opens (FOPEN_KEEP_CACHE). For the caching experiment only:
	// buffered writes are written back later, so their errors reach fsync,
	// not write.
	CacheKeep
	// CachePage uses the page cache but drops it on every open.
	// For the caching experiment only.
	CachePage
)

func (m CacheMode) String() string {
	switch m {
	case CacheDirect:
		return "direct"
	case CacheKeep:
		return "keep-cache"
	case CachePage:
		return "page-cache"
	}
	return "cache(?)"
}

// Options configure a mount. The zero value is the production setting.
type Options struct {
	// FsName is the "device" column of mount and df; default "mpathfs".
	FsName string
	// AllowOther lets users other than the mounting one reach the files.
	// The kernel still enforces their mode and owner (0600, the mounting
	// user): every mount uses default_permissions, so only the mounting
	// user and root can open a device file.
	AllowOther bool
	// Debug logs every FUSE request and reply (to the Logger, never into
	// the mount).
	Debug bool
	// Logger receives go-fuse's messages; default log.Default().
	Logger *log.Logger
	// UnmountTimeout bounds the clean unmount attempts of Unmount before it
	// falls back to a lazy unmount and aborts the FUSE connection;
	// default 3 s.
	UnmountTimeout time.Duration

	// The knobs below exist for the option measurements
	// (bench/fuse-options.sh); production leaves them zero.

	// Cache selects the kernel caching mode; default CacheDirect.
	Cache CacheMode
	// MaxWrite is the largest READ or WRITE request; default 1 MiB.
	MaxWrite int
	// MaxBackground is the number of asynchronous requests (async direct
	// I/O, readahead) the kernel keeps in flight; default 64.
	MaxBackground int
	// MaxRequests bounds how many FUSE requests the daemon holds at once,
	// counting the readers waiting on the kernel. Each holds a request
	// buffer of MaxWrite bytes whatever its size, so this bounds the
	// memory of the I/O path: about MaxRequests × MaxWrite. Requests
	// beyond it wait in the kernel's queue. Default DefaultMaxRequests;
	// negative: no bound (go-fuse's default).
	MaxRequests int
	// NoAsyncDIO leaves CAP_ASYNC_DIO off: the kernel then handles
	// O_DIRECT and AIO on the file synchronously, one request at a time per
	// caller.
	NoAsyncDIO bool
}

// Timeouts for the kernel's entry and attribute caches. The device files'
// attributes change only through fusedev (and AddDevice/RemoveDevice
// invalidate entries explicitly), so the kernel may keep them long.
const (
	EntryTimeout = time.Hour
	AttrTimeout  = time.Hour
)

// DefaultMaxRequests is the default of Options.MaxRequests: enough
// requests in flight to keep two cores busy at 4k (measured: 4k randrw
// QD32×2 within noise of no bound, see docs/design.md), few enough that
// the request buffers stay near 32 MiB.
const DefaultMaxRequests = 32

// RequestBytes is the memory go-fuse accounts for one request held with
// the given MaxWrite (the request buffer plus its header and alignment,
// rounded up).
func RequestBytes(maxWrite int) int {
	if maxWrite <= 0 {
		maxWrite = defaultMaxWrite
	}
	return maxWrite + 2*4096
}

const (
	defaultFsName         = "mpathfs"
	defaultMaxWrite       = 1 << 20
	defaultMaxBackground  = 64
	defaultUnmountTimeout = 3 * time.Second
)

// MountOptions returns the go-fuse mount options for o. fusedev and the
// go-fuse ceiling program (bench/fuseceiling) both mount with it, so the
// benchmark compares like with like.
func MountOptions(o Options) fuse.MountOptions {
	mo := fuse.MountOptions{
		// The kernel checks mode and owner itself (generic_permission
		// on the cached attributes) before a request reaches us; without
		// it, allow_other would let any user read and write the device.
		// It costs no request: the attributes are cached for an hour.
		Options:       []string{"default_permissions"},
		FsName:        o.FsName,
		Name:          defaultFsName,
		AllowOther:    o.AllowOther,
		Debug:         o.Debug,
		Logger:        o.Logger,
		MaxWrite:      o.MaxWrite,
		MaxBackground: o.MaxBackground,
		// O_TRUNC arrives as an open flag, which a fixed-size device
		// ignores as a block device does, instead of a SETATTR that
		// would have to be refused.
		ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
		DirectMount:       true,
		DisableXAttrs:     true,
		// Reads answer with fuse.ReadResultData. With splice enabled
		// go-fuse first tries to splice such a reply through a pipe
		// (extra syscalls; for 1 MiB replies the pipe cannot grow and
		// every read logs an error) before falling back to writev.
		DisableSplice: true,
	}
	if mo.FsName == "" {
		mo.FsName = defaultFsName
	}
	if mo.MaxWrite <= 0 {
		mo.MaxWrite = defaultMaxWrite
	}
	if mo.MaxBackground <= 0 {
		mo.MaxBackground = defaultMaxBackground
	}
	switch n := o.MaxRequests; {
	case n == 0:
		mo.MaxInflightRequestBytes = DefaultMaxRequests * RequestBytes(mo.MaxWrite)
	case n > 0:
		mo.MaxInflightRequestBytes = n * RequestBytes(mo.MaxWrite)
	}
	if !o.NoAsyncDIO {
		mo.ExtraCapabilities |= fuse.CAP_ASYNC_DIO
	}
	return mo
}

// OpenFlags returns the FOPEN_* flags an open of a device file answers
// with in o's caching mode.
func OpenFlags(o Options) uint32 {
	switch o.Cache {
	case CacheKeep:
		return fuse.FOPEN_KEEP_CACHE
	case CachePage:
		return 0
	}
	return fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
}

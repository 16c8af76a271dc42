package hotplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/pilebones/go-udev/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/block"
)

// Source is what the consumer needs of a watcher: a Watcher from Watch, or
// one from NewFromChannel in tests.
type Source interface {
	// Events delivers the events; it is closed after Close, after the
	// context of Watch is done, or when the source fails (see Err).
	Events() <-chan Event
	Close() error
}

var _ Source = (*Watcher)(nil)

// Watcher delivers block-device events. Its goroutine is owned by the
// Watcher and gone once Close returns.
type Watcher struct {
	events  chan Event
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when the goroutine has returned
	once    sync.Once     // closes done
	once2   sync.Once     // closes the wake pipe

	// netlink source only
	conn         *netlink.UEventConn
	wakeR, wakeW int
	sysRoot      string
	state        map[string]DeviceState // owned by the goroutine

	mu struct {
		sync.Mutex
		err error
	}
}

// Watch starts watching kernel uevents for block devices. It needs root
// (CAP_NET_ADMIN is not needed, but reading every uevent is privileged on
// some systems). The watcher stops when ctx is done or Close is called.
func Watch(ctx context.Context) (*Watcher, error) {
	conn := &netlink.UEventConn{}
	if err := conn.Connect(netlink.KernelEvent); err != nil {
		return nil, fmt.Errorf("hotplug: netlink uevent socket: %w", err)
	}
	// A larger receive buffer makes an overflow (ENOBUFS) rare; one that
	// happens is handled by a resync.
	_ = unix.SetsockoptInt(conn.Fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		conn.Close()
		return nil, fmt.Errorf("hotplug: pipe: %w", err)
	}
	w := &Watcher{
		events:  make(chan Event, 64),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		conn:    conn,
		wakeR:   p[0],
		wakeW:   p[1],
		sysRoot: "/sys/class/block",
	}
	// Know every device before the first event, so a change can be
	// compared with the state before it.
	w.state = w.scan()
	go w.run()
	go func() {
		select {
		case <-ctx.Done():
			w.Close()
		case <-w.done:
		case <-w.stopped:
		}
	}()
	return w, nil
}

// NewFromChannel returns a Source that delivers the events sent on ch, for
// the consumer's tests. Its Events channel closes when ch is closed or
// Close is called.
func NewFromChannel(ch <-chan Event) *Watcher {
	w := &Watcher{
		events:  make(chan Event),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go func() {
		defer close(w.stopped)
		defer close(w.events)
		for {
			select {
			case <-w.done:
				return
			case e, ok := <-ch:
				if !ok {
					return
				}
				select {
				case w.events <- e:
				case <-w.done:
					return
				}
			}
		}
	}()
	return w
}

// Events delivers the events. It is closed when the watcher stops.
func (w *Watcher) Events() <-chan Event { return w.events }

// Err tells why the watcher stopped on its own (nil after Close or the
// context's end).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.err
}

// Close stops the watcher and waits for its goroutine. Events not yet
// received are dropped.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		close(w.done)
		if w.conn != nil {
			unix.Write(w.wakeW, []byte{0})
		}
	})
	<-w.stopped
	w.once2.Do(func() {
		if w.conn != nil {
			unix.Close(w.wakeR)
			unix.Close(w.wakeW)
		}
	})
	return nil
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	w.mu.err = err
	w.mu.Unlock()
}

func (w *Watcher) run() {
	defer close(w.stopped)
	defer close(w.events)
	defer w.conn.Close()
	fds := []unix.PollFd{{Fd: int32(w.conn.Fd), Events: unix.POLLIN}, {Fd: int32(w.wakeR), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			w.fail(fmt.Errorf("hotplug: poll: %w", err))
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 && fds[0].Revents&unix.POLLIN == 0 {
			// POLLERR on a netlink socket is the overflow; reading reports it.
			fds[0].Revents |= unix.POLLIN
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		msg, err := w.conn.ReadMsg()
		switch {
		case errors.Is(err, unix.ENOBUFS):
			// Events were lost: compare sysfs with what we knew.
			if !w.resync() {
				return
			}
			continue
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			w.fail(fmt.Errorf("hotplug: reading uevents: %w", err))
			return
		}
		ue, err := netlink.ParseUEvent(msg)
		if err != nil || ue.Env["SUBSYSTEM"] != "block" {
			continue
		}
		if !w.handle(string(ue.Action), ue.Env) {
			return
		}
	}
}

// handle maps one uevent and sends its events; false means the watcher is
// closing.
func (w *Watcher) handle(action string, env map[string]string) bool {
	name := env["DEVNAME"]
	if name == "" {
		name = filepath.Base(env["DEVPATH"])
	}
	prev := w.state[name]
	var cur DeviceState
	if action != "remove" {
		cur = readState(w.sysRoot, name)
	}
	if cur.Present {
		w.state[name] = cur
	} else {
		delete(w.state, name)
	}
	for _, e := range Map(action, env, prev, cur) {
		if !w.send(e) {
			return false
		}
	}
	return true
}

func (w *Watcher) send(e Event) bool {
	if e.Kind == Added {
		inq, err := block.Identify(e.Name)
		if err != nil {
			e.Reason += " (no identity: " + err.Error() + ")"
		}
		e.WWID = inq.WWID
	}
	select {
	case w.events <- e:
		return true
	case <-w.done:
		return false
	}
}

// resync compares every device in sysfs with the known state after lost
// events and sends what changed.
func (w *Watcher) resync() bool {
	now := w.scan()
	names := map[string]bool{}
	for n := range now {
		names[n] = true
	}
	for n := range w.state {
		names[n] = true
	}
	for n := range names {
		prev, cur := w.state[n], now[n]
		action, env := "change", map[string]string{"SUBSYSTEM": "block", "DEVNAME": n}
		if !cur.Present {
			action = "remove"
		}
		if maj, min, ok := sysDev(filepath.Join(w.sysRoot, n, "dev")); ok {
			env["MAJOR"], env["MINOR"] = strconv.Itoa(maj), strconv.Itoa(min)
		}
		for _, e := range Map(action, env, prev, cur) {
			e.Reason = "resync after lost uevents, " + e.Reason
			if !w.send(e) {
				return false
			}
		}
	}
	w.state = now
	return true
}

func (w *Watcher) scan() map[string]DeviceState {
	out := map[string]DeviceState{}
	ents, _ := os.ReadDir(w.sysRoot)
	for _, e := range ents {
		if s := readState(w.sysRoot, e.Name()); s.Present {
			out[e.Name()] = s
		}
	}
	return out
}

// readState reads a device's state from sysfs (root is /sys/class/block).
func readState(root, name string) DeviceState {
	dir := filepath.Join(root, name)
	b, err := os.ReadFile(filepath.Join(dir, "size"))
	if err != nil {
		return DeviceState{}
	}
	s := DeviceState{Present: true, Loop: isLoopDisk(name)}
	s.Size, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if s.Loop {
		if bf, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file")); err == nil {
			s.Backing = strings.TrimSpace(string(bf))
			var st unix.Stat_t
			if unix.Stat(s.Backing, &st) == nil {
				s.Backing = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
			}
		}
	}
	return s
}

func sysDev(name string) (major, minor int, ok bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, 0, false
	}
	ma, mi, found := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !found {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(ma)
	minor, err2 := strconv.Atoi(mi)
	return major, minor, err1 == nil && err2 == nil
}

// DeviceOf tells which block device a block:// URI or a /dev path (also a
// symlink such as /dev/disk/by-id/…) refers to, so a consumer can match
// events to paths. Call it when the path is set up and keep the result: a
// removed device's node may be gone by the time its event arrives. ok is
// false for other schemes and for anything that is not a block device.
func DeviceOf(uri string) (major, minor int, ok bool) {
	u, err := backends.ParseURI(uri)
	if err != nil || u.Scheme != "block" {
		return 0, 0, false
	}
	p := u.Path
	if p == "" {
		p = u.Opaque
	}
	var st unix.Stat_t
	if p == "" || unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, false
	}
	return int(unix.Major(st.Rdev)), int(unix.Minor(st.Rdev)), true
}

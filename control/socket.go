package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/host"
)

// Who may use the control socket, and how it comes into being.
//
//   - The socket is created in a private directory (mode 0700) next to its
//     final path, made mode 0600 there, and only then moved into place with
//     a rename that never replaces anything (RENAME_NOREPLACE, or a hard
//     link on file systems without it). No one can connect to it before
//     its mode is set.
//   - Every connection's peer credentials (SO_PEERCRED) are checked: root
//     and the user the daemon runs as are served, anyone else gets an HTTP
//     403 with a message. The mode (0600) already keeps others out; the
//     check holds when the mode was loosened (chmod) or the caller holds
//     CAP_DAC_OVERRIDE without being root.
//   - A directory every user may write to without the sticky bit is
//     refused: anyone could swap the socket for their own.
//   - An existing file at the socket's path is never removed unless it is a
//     socket nobody answers on (the leftover of a crash). A socket that
//     answers means another mpathfs serves there; anything that is not a
//     socket (a regular file, a directory, a symlink) is refused by name.

// ErrSocketInUse is returned by Listen when another process answers on
// the socket's path.
var ErrSocketInUse = errors.New("is in use by a running mpathfs: stop it or give another --control")

// ErrNotSocket is returned by Listen when the socket's path exists and is
// not a socket; it is left alone.
var ErrNotSocket = errors.New("exists and is not a socket")

// Listen creates the socket (mode 0600; missing parent directories are
// created, mode 0755, so that other users reach the socket and are refused
// by its mode and credentials check rather than by a missing directory)
// and starts serving. A stale socket left by a crash is replaced; a live
// one, or anything at path that is not a socket, is an error naming path.
func Listen(path string, rt *Runtime) (*Server, error) {
	ln, id, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	s := &Server{rt: rt, ln: ln, path: path, id: id, owner: uint32(os.Geteuid())}
	s.srv = &http.Server{
		Handler:           s.guard(s.mux()),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       peerContext,
	}
	go s.srv.Serve(ln)
	return s, nil
}

// fileID identifies the socket file we created, so that Close removes it
// and nothing that took its place since.
type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return fileID{}
}

// maxSunPath is the longest socket path bind(2) takes (sun_path holds
// 108 bytes with the terminating NUL).
const maxSunPath = 107

// listenUnix binds a Unix socket at path without a moment in which it is
// reachable with a wider mode than 0600.
func listenUnix(path string) (*net.UnixListener, fileID, error) {
	fail := func(err error) (*net.UnixListener, fileID, error) {
		return nil, fileID{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := checkDir(dir); err != nil {
		return fail(err)
	}
	if err := clearStale(path); err != nil {
		return fail(err)
	}
	tmpDir, err := os.MkdirTemp(dir, ".mpathfs-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmpDir)
	if err := os.Chmod(tmpDir, 0o700); err != nil { // MkdirTemp does 0700; make sure
		return fail(err)
	}
	tmp := filepath.Join(tmpDir, "s")
	bindName := tmp
	if len(tmp) > maxSunPath && len(path) <= maxSunPath {
		// The detour through the private directory must not make a
		// path that fits too long: bind through the directory's
		// descriptor instead (/proc/self/fd/N/s).
		dfd, err := unix.Open(tmpDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		defer unix.Close(dfd)
		bindName = fmt.Sprintf("/proc/self/fd/%d/s", dfd)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindName, Net: "unix"})
	if err != nil {
		return fail(err)
	}
	// The listener's own path goes away with the rename; Close removes the
	// final path itself (Server.Close).
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return fail(err)
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		ln.Close()
		return fail(err)
	}
	if err := renameNoReplace(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, fs.ErrExist) {
			// Someone created something at path since clearStale.
			return fail(fmt.Errorf("%w (it appeared while the socket was being created): refusing to replace it", ErrNotSocket))
		}
		return fail(err)
	}
	return ln, idOf(fi), nil
}

// ErrOpenDir is returned by Listen when the socket's directory lets other
// users replace the socket.
var ErrOpenDir = errors.New("is writable by every user without the sticky bit: anyone could replace the socket; use another directory for --control")

// checkDir refuses a directory in which any user may remove or rename
// our socket and put their own in its place (world-writable without the
// sticky bit; /tmp with its sticky bit is fine).
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if m := fi.Mode(); m.Perm()&0o002 != 0 && m&fs.ModeSticky == 0 {
		return fmt.Errorf("directory %s (mode %04o) %w", dir, m.Perm(), ErrOpenDir)
	}
	return nil
}

// renameNoReplace moves oldpath to newpath, failing with EEXIST if
// newpath exists. File systems without RENAME_NOREPLACE get a hard link
// and an unlink, which never replace either.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}

// clearStale makes room at path for a new socket: nothing there is fine;
// a socket that accepts a connection is ErrSocketInUse; a socket that
// refuses connections (no process listens on it any more) is removed;
// anything else is ErrNotSocket and is left untouched.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w (%s): refusing to replace it; remove it yourself or give another --control", ErrNotSocket, kindOf(fi))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return ErrSocketInUse
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// EACCES, a timeout (a live but busy server)…: not provably stale.
		return fmt.Errorf("cannot tell whether the socket is stale: %w", err)
	}
	// Remove it only if it is still the file we probed.
	if now, err := os.Lstat(path); err != nil || !os.SameFile(fi, now) {
		return fmt.Errorf("changed while it was being probed")
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func kindOf(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "a regular file"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a socket"
}

// removeOwn removes the socket at path if it is still the one we created.
func removeOwn(path string, id fileID) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || idOf(fi) != id {
		return
	}
	os.Remove(path)
}

type peerKey struct{}

// peer is the credentials of a connection's client process, or the error
// of reading them.
type peer struct {
	cred *unix.Ucred
	err  error
}

// peerContext reads SO_PEERCRED of every accepted connection once and
// keeps it in the connection's context.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}

func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("not a Unix socket connection")}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var p peer
	if err := raw.Control(func(fd uintptr) {
		p.cred, p.err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{err: err}
	}
	return p
}

// allowed reports whether uid may use the socket: root and the user the
// daemon runs as.
func (s *Server) allowed(uid uint32) bool {
	if f := s.allow.Load(); f != nil {
		return (*f)(uid)
	}
	return uid == 0 || uid == s.owner
}

// guard refuses every request from a peer that is not allowed, with a 403
// and a message saying who may.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p, _ := req.Context().Value(peerKey{}).(peer)
		switch {
		case p.err != nil || p.cred == nil:
			ReplyError(w, host.Kinded(ErrPermission, fmt.Errorf("mpathfs control socket %s: cannot read the caller's credentials (%v): refused", s.path, p.err)))
			return
		case !s.allowed(p.cred.Uid):
			who := "only root (who started the mount) may use it"
			if s.owner != 0 {
				who = fmt.Sprintf("only root and uid %d (who started the mount) may use it", s.owner)
			}
			ReplyError(w, host.Kinded(ErrPermission, fmt.Errorf("mpathfs control socket %s: permission denied for uid %d: %s", s.path, p.cred.Uid, who)))
			return
		}
		next.ServeHTTP(w, req)
	})
}

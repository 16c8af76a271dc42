package nbd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is an NBD server process started by a test.
type server struct {
	t       testing.TB
	bin     string
	args    []string
	pidfile string
	cmd     *exec.Cmd
	port    int    // TCP, or 0
	sock    string // Unix socket, or ""
	qemu    bool   // qemu-nbd: readiness needs a connect as well
}

// startNbdkit starts nbdkit listening on a fresh 127.0.0.1 port (tcp) or a
// socket in a temp dir, with args after the common flags.
func startNbdkit(t testing.TB, tcp bool, args ...string) *server {
	t.Helper()
	bin := needs.Program(t, "nbdkit")
	dir := t.TempDir()
	s := &server{t: t, bin: bin, pidfile: filepath.Join(dir, "srv.pid")}
	common := []string{"-f", "--exit-with-parent", "-P", s.pidfile}
	if tcp {
		s.port = freePort(t)
		common = append(common, "-i", "127.0.0.1", "-p", strconv.Itoa(s.port))
	} else {
		s.sock = filepath.Join(dir, "nbd.sock")
		common = append(common, "-U", s.sock)
	}
	s.args = append(common, args...)
	s.start()
	t.Cleanup(s.kill)
	return s
}

// startQemuNbd serves file with qemu-nbd on a Unix socket as export name.
func startQemuNbd(t testing.TB, file, name string) *server {
	t.Helper()
	bin := needs.Program(t, "qemu-nbd")
	dir := t.TempDir()
	s := &server{t: t, bin: bin, pidfile: filepath.Join(dir, "srv.pid"), sock: filepath.Join(dir, "q.sock"), qemu: true}
	s.args = []string{"-f", "raw", "-x", name, "-k", s.sock, "-t", "-e", "8", "--pid-file", s.pidfile, file}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() {
	s.t.Helper()
	os.Remove(s.pidfile)
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting %s: %v", s.bin, err)
	}
	s.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(s.pidfile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			if s.qemu { // qemu-nbd may write the pid file before listening
				if c, err := net.Dial("unix", s.sock); err == nil {
					c.Close()
					return
				}
			} else {
				return
			}
		}
		select {
		case <-exited:
			s.t.Fatalf("%s %s exited before it was ready", s.bin, strings.Join(s.args, " "))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			s.t.Fatalf("%s not ready after 10s", s.bin)
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stoppedOneConn starts nbdkit's memory plugin with an export of size
// bytes (nbdkit's notation: 4M), opens a client with one connection and
// stops the server (SIGSTOP), so that what the client sends waits in the
// socket. It returns the server, the client and its connection. When the
// test ends the server is continued, then the client closed.
func stoppedOneConn(t *testing.T, size string) (*server, *Client, *conn) {
	t.Helper()
	s := startNbdkit(t, false, "memory", "size="+size)
	c := openT(t, s.uri("")+"&connections=1")
	t.Cleanup(func() { c.Close() })
	cn, err := c.current("read")
	if err != nil {
		t.Fatal(err)
	}
	pid := s.pid()
	stopServer(t, pid)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	return s, c, cn
}

// kill stops the server with SIGKILL by PID and reaps it.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT)
	s.cmd.Process.Kill()
	for i := 0; i < 200; i++ { // reaped by the Wait goroutine
		if syscall.Kill(s.cmd.Process.Pid, 0) != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.cmd = nil
}

// restart starts the server again with the same arguments (same port or socket).
func (s *server) restart() {
	s.t.Helper()
	if s.sock != "" {
		os.Remove(s.sock)
	}
	s.start()
}

func (s *server) uri(export string) string {
	if s.sock != "" {
		return "nbd+unix:///" + export + "?socket=" + s.sock
	}
	return fmt.Sprintf("nbd://127.0.0.1:%d/%s", s.port, export)
}

func sparseFile(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func fmtInt(i int64) string { return strconv.FormatInt(i, 10) }

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

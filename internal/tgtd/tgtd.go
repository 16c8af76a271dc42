// Package tgtd runs Debian's tgt (the Linux SCSI target framework daemon)
// for tests: one tgtd process per call, listening on 127.0.0.1 on a free
// port with its own management socket, with targets and file-backed logical
// units created through tgtadm, killed by its PID when the test ends. It is
// the peer our iSCSI initiator is tested against.
package tgtd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need skips the test (fails it when CI is set) without root, tgtd or
// tgtadm. (It is internal/needs' Tools, which an internal package may not
// import: the layer rules keep internal/... a leaf.)
func Need(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	why := fmt.Sprintf("needs %s (install with `make deps`: Debian package tgt)", strings.Join(missing, ", "))
	if ci := os.Getenv("CI"); ci != "" {
		t.Fatalf("CI=%s is set but the test %s", ci, why)
	}
	t.Skipf("skipped: the test %s (set CI=1 to make this a failure)", why)
}

// Daemon is one running tgtd.
type Daemon struct {
	t    testing.TB
	Addr string // the portal, 127.0.0.1:PORT
	ctl  int    // management port (-C)
	cmd  *exec.Cmd
	log  *syncBuf
	tid  int
}

// Start runs a tgtd on a free port of 127.0.0.1.
func Start(t testing.TB) *Daemon {
	t.Helper()
	Need(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tgtd: finding a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// a management port nobody uses: its socket file must not exist
	ctl := 0
	for range 100 {
		c := 1000 + rand.IntN(30000) // tgtd takes 0..32767
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", c)); os.IsNotExist(err) {
			ctl = c
			break
		}
	}
	if ctl == 0 {
		t.Fatal("tgtd: no free management port")
	}
	d := &Daemon{t: t, Addr: addr, ctl: ctl, log: &syncBuf{}}
	d.cmd = exec.Command("tgtd", "-f", "-C", strconv.Itoa(ctl), "--iscsi", "portal="+addr)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("tgtd: %v", err)
	}
	pid := d.cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = d.cmd.Wait()
		_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d", ctl))
		_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d.lock", ctl))
	})
	// ready when the management socket answers and the portal listens
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := d.adm("--op", "show", "--mode", "sys")
		if err == nil {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tgtd did not come up in 10s: %v\n%s", err, d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// PID is tgtd's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

func (d *Daemon) adm(args ...string) (string, error) {
	full := append([]string{"-C", strconv.Itoa(d.ctl), "--lld", "iscsi"}, args...)
	out, err := exec.Command("tgtadm", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Adm runs tgtadm against this daemon and fails the test on an error.
func (d *Daemon) Adm(args ...string) string {
	d.t.Helper()
	out, err := d.adm(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// Target is one target of the daemon.
type Target struct {
	d   *Daemon
	TID int
	IQN string
}

// AddTarget creates a target that every initiator may log in to.
func (d *Daemon) AddTarget(iqn string) *Target {
	d.t.Helper()
	d.tid++
	tid := strconv.Itoa(d.tid)
	d.Adm("--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
	d.Adm("--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL")
	return &Target{d: d, TID: d.tid, IQN: iqn}
}

// AddLU creates a file-backed logical unit of size bytes (a sparse file in
// the test's temporary directory) and returns the file's path. Extra
// parameters (--params scsi_sn=…) follow.
func (tg *Target) AddLU(lun int, size int64, extra ...string) string {
	tg.d.t.Helper()
	f := filepath.Join(tg.d.t.TempDir(), fmt.Sprintf("lu%d-%d.img", tg.TID, lun))
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		tg.d.t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		tg.d.t.Fatal(err)
	}
	args := []string{"--op", "new", "--mode", "logicalunit", "--tid", strconv.Itoa(tg.TID), "--lun", strconv.Itoa(lun), "-b", f}
	tg.d.Adm(append(args, extra...)...)
	return f
}

// CHAP sets the target's incoming account (the initiator proves itself
// with it) and, with mutual set, its outgoing account (the target proves
// itself to the initiator).
func (tg *Target) CHAP(user, secret, mutualUser, mutualSecret string) {
	tg.d.t.Helper()
	tid := strconv.Itoa(tg.TID)
	tg.d.Adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
	tg.d.Adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", user)
	if mutualUser != "" {
		tg.d.Adm("--op", "new", "--mode", "account", "--user", mutualUser, "--password", mutualSecret)
		tg.d.Adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", mutualUser, "--outgoing")
	}
}

// Log returns what tgtd printed so far.
func (d *Daemon) Log() string { return d.log.String() }

// syncBuf is a bytes.Buffer that tgtd's output goroutine and the test share.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Set changes one of the target's iSCSI parameters (HeaderDigest,
// MaxRecvDataSegmentLength, …).
func (tg *Target) Set(name, value string) {
	tg.d.t.Helper()
	tg.d.Adm("--op", "update", "--mode", "target", "--tid", strconv.Itoa(tg.TID), "--name", name, "--value", value)
}

// DropInitiator closes every connection of the sessions the initiator
// (by name) has with the target, as a network failure or an administrator
// would, and returns how many it closed.
func (tg *Target) DropInitiator(initiator string) int {
	tg.d.t.Helper()
	out := tg.d.Adm("--op", "show", "--mode", "target")
	tid := strconv.Itoa(tg.TID)
	// the target's block of `show`: its I_T nexus lines name the session
	// (I_T nexus: SID), the initiator and each connection (Connection: CID)
	var block []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Target ") {
			in = strings.HasPrefix(l, "Target "+tid+":")
			continue
		}
		if in {
			block = append(block, strings.TrimSpace(l))
		}
	}
	n := 0
	sid, match := "", false
	for _, l := range block {
		switch {
		case strings.HasPrefix(l, "I_T nexus: "):
			sid, match = strings.TrimPrefix(l, "I_T nexus: "), false
		case strings.HasPrefix(l, "Initiator: "):
			name, _, _ := strings.Cut(strings.TrimPrefix(l, "Initiator: "), " ")
			match = sid != "" && name == initiator
		case strings.HasPrefix(l, "Connection: ") && match:
			cid := strings.TrimPrefix(l, "Connection: ")
			tg.d.Adm("--op", "delete", "--mode", "conn", "--tid", tid, "--sid", sid, "--cid", cid)
			n++
		case strings.HasPrefix(l, "LUN information"):
			sid, match = "", false
		}
	}
	return n
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// Several hosts on one LU: two `mpathfs mount`s on one machine, each with
// its own initiator name, reach one logical unit of one `mpathfs array
// serve` over iscsi:// paths. Each host runs fio --verify over its own
// range of the LU under the integrity checker (mount --verify), so both
// oracles judge what the cluster did to each host's data.

// clusterArray starts `mpathfs array serve` with controllers A (ports 1,
// 2) and B (ports 3, 4) on free ports of 127.0.0.1, one 128 MiB LU, and
// the given alua section; it is stopped by its PID.
func clusterArray(t *testing.T, alua string) *arrayServer {
	t.Helper()
	needs.Tools(t, "root", "/dev/fuse", "fio")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "array.yaml")
	yaml := fmt.Sprintf(`target: iqn.2026-01.io.mpathfs.e2e:cluster
state_dir: %s
alua:
%s
lus:
  - name: data
    lun: 0
    file: %s
    size: 128M
controllers:
  - name: A
    ports:
      - {id: 1, portal: "127.0.0.1:0"}
      - {id: 2, portal: "127.0.0.1:0"}
  - name: B
    ports:
      - {id: 3, portal: "127.0.0.1:0"}
      - {id: 4, portal: "127.0.0.1:0"}
`, filepath.Join(dir, "state"), alua, filepath.Join(dir, "lu.img"))
	require.NoError(t, os.WriteFile(cfg, []byte(yaml), 0o600))
	s, out := runArrayServe(t, dir, cfg)
	require.Len(t, s.portals, 4, "array serve printed:\n%s", out.String())
	return s
}

// hostIQN is the initiator name of cluster host name.
func hostIQN(name string) string { return "iqn.2026-01.io.mpathfs.e2e:host-" + name }

// hostURI is host name's path to the LU through portal i (0, 1: controller
// A; 2, 3: B).
func (s *arrayServer) hostURI(name string, i int) string {
	return fmt.Sprintf("iscsi://%s/%s/0?initiator=%s", s.portals[i], s.iqn, hostIQN(name))
}

// clusterHost mounts device d0 as host name over the given portals, with
// the integrity checker, a fast path checker and extra flags. The hosts
// share the LU as multi-writers (each holds a writer slot of the LU's
// lock record): without --multi-writer the second would be refused.
func clusterHost(t *testing.T, s *arrayServer, name string, portals []int, extra ...string) *mount {
	t.Helper()
	args := []string{"--name", "d0", "--verify", "--multi-writer", "--check-interval", "300ms", "--io-timeout", "3s"}
	for _, i := range portals {
		args = append(args, "--path", s.hostURI(name, i))
	}
	args = append(args, extra...)
	return startMount(t, args...)
}

// clusterFio is fio --verify (crc32c, every block checked during the run
// and after it) over the host's own 16 MiB of the LU: host i writes
// [32i MiB, 32i+16 MiB).
func clusterFio(ctx context.Context, m *mount, host, seconds, iodepth int) *fioRun {
	return startFio(ctx, "--name=verify", "--filename="+m.file("d0"), "--direct=1", "--rw=randrw", "--bs=4k",
		"--ioengine=libaio", fmt.Sprintf("--iodepth=%d", iodepth), fmt.Sprintf("--offset=%dM", 32*host), "--size=16M",
		"--time_based", fmt.Sprintf("--runtime=%d", seconds),
		"--verify=crc32c", "--do_verify=1", "--verify_backlog=256", "--verify_fatal=1", "--verify_state_save=0",
		fmt.Sprintf("--randseed=%d", 42+host))
}

// arrayStatus is the part of `array status --json` the cluster tests read.
type arrayStatus struct {
	Owner      string `json:"owner"`
	Transfers  uint64 `json:"transfers"`
	Trespasses uint64 `json:"trespasses"`
	TPGs       []struct {
		ID    int    `json:"id"`
		State string `json:"state"`
	} `json:"tpgs"`
}

func (s *arrayServer) status(t *testing.T) arrayStatus {
	t.Helper()
	out := s.ctl(t, "status", "--json")
	var st struct {
		Array *arrayStatus `json:"array"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.NotNil(t, st.Array, out)
	return *st.Array
}

// countEvents counts the events of a kind the log has seen.
func countEvents(l *eventLog, kind string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// satpConfig is the SATP configuration status shows for d0.
func satpConfig(m *mount) string {
	for _, d := range m.status().Devices {
		if d.Name == "d0" {
			return d.SATPConfig
		}
	}
	return ""
}

// TestClusterALUAFollowover: ALUA follow-over between two hosts. The array
// is explicit-ALUA with controller A (TPG 1, PREF) active/optimized and
// B's group forced standby. Both hosts run fio --verify over their own
// range through all four ports. Host A then loses its paths to controller
// A (the array drops host A's connections on ports 1 and 2): no usable
// group is left, so host A's VMW_SATP_ALUA sends SET TARGET PORT GROUPS to
// make B's group active/optimized — an explicit transition. Host B learns
// of it from unit attention 2A/06 (an alua-state-changed event) and, with
// alua_followover=on (the default), follows: its I/O moves to B's ports and
// it does not ask for its PREF group back, so the array counts exactly one
// transfer while both hosts keep writing (no ping-pong). A third host with
// alua_followover=off shows what the option prevents: it moves the LU
// back to the PREF group at once. fio and the integrity checker see 0
// errors on both hosts.
func TestClusterALUAFollowover(t *testing.T) {
	s := clusterArray(t, "  access: active-active\n  transitions: explicit\n  owner: A\n  preferred: A")
	all := []int{0, 1, 2, 3}
	a := clusterHost(t, s, "a", all)
	b := clusterHost(t, s, "b", all)
	// B's group goes standby once the hosts are up (a path cannot be
	// opened through a standby port: READ CAPACITY is not allowed there).
	s.ctl(t, "set-tpg", "2", "S")
	for _, m := range []*mount{a, b} {
		require.Equal(t, "VMW_SATP_ALUA", m.status().Devices[0].SATP)
		require.Contains(t, satpConfig(m), "alua_followover=on")
	}
	evB := followEvents(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := []*fioRun{clusterFio(ctx, a, 0, 14, 8), clusterFio(ctx, b, 1, 14, 8)}
	time.Sleep(2 * time.Second)
	before := s.status(t)
	require.Equal(t, "A", before.Owner)

	// Host A loses controller A: its connections on ports 1 and 2 drop.
	for _, port := range []string{"1", "2"} {
		s.ctl(t, "fault", "inject", "--initiator", hostIQN("a"), "--port", port, "--op", "any", "--error", "path-failure")
	}
	waitFor(t, 20*time.Second, "host A's STPG: controller B owns the LU", func() bool { return s.status(t).Owner == "B" })
	waitFor(t, 20*time.Second, "host B following: I/O through B's ports, AO", func() bool {
		p := iscsiPath(b, s.hostURI("b", 2))
		q := iscsiPath(b, s.hostURI("b", 3))
		return p.ALUAState == "AO" && p.Reads+p.Writes+q.Reads+q.Writes > 0
	})
	followed := s.status(t)
	assert.Equal(t, before.Transfers+1, followed.Transfers, "host A's explicit transition is one transfer")
	// Both hosts keep writing for the rest of the run: nobody moves the
	// LU back (ping-pong would show as more transfers).
	runs[1].wait()
	runs[0].wait()
	after := s.status(t)
	assert.Equal(t, "B", after.Owner, "the LU stays where host A moved it")
	assert.Equal(t, followed.Transfers, after.Transfers, "no ping-pong: no transfer after host A's")
	assert.Positive(t, countEvents(evB, "alua-state-changed"), "host B saw the change:\n%s", evB.String())
	fioClean(t, runs[:1], a)
	fioClean(t, runs[1:], b)

	// Without follow-over, a host fails back to its PREF group at once.
	c := clusterHost(t, s, "c", all, "--satp-option", "alua_followover=off")
	require.Contains(t, satpConfig(c), "alua_followover=off")
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	crun := clusterFio(cctx, c, 2, 3, 4)
	waitFor(t, 20*time.Second, "host C (alua_followover=off) moving the LU back to A", func() bool { return s.status(t).Owner == "A" })
	assert.Greater(t, s.status(t).Transfers, after.Transfers, "host C's failback is a transfer")
	fioClean(t, []*fioRun{crun}, c)

	s.ctl(t, "fault", "clear", "--all")
	waitFor(t, 20*time.Second, "host A's paths to controller A back", func() bool {
		return iscsiPath(a, s.hostURI("a", 0)).State == "active" && iscsiPath(a, s.hostURI("a", 1)).State == "active"
	})
	oracleClean(t, a, "d0")
	oracleClean(t, b, "d0")
	oracleClean(t, c, "d0")
	for _, m := range []*mount{a, b, c} {
		m.stopClean(t)
	}
}

// TestClusterPathThrashing: path thrashing on an active/passive array
// (seed: VMW_SATP_DEFAULT_AP with FIXED preferring different controllers
// on two hosts). The array trespasses on I/O (trespass_on_io): a read or
// write through the passive controller's port moves the LU there. Host A
// prefers its path to controller A, host B its path to B; under fio
// --verify on both, every I/O of one host moves the LU away from the
// other: the array counts the trespasses, each host's DEFAULT_AP SATP
// publishes an ownership-changed event per move it meets (and counts them
// in its configuration), and the paths' retryable-error counters climb.
// Then both hosts switch to MRU: MRU keeps the path it is given (both take
// the first path, controller A's) and never fails back, so the
// trespasses stop (hedged reads, which could reach the other controller,
// are never sent on an active/passive LU). Both hosts keep their LU lock
// throughout: its heartbeat goes through the unit attentions every
// trespass leaves. fio and the integrity checker see 0 errors throughout.
func TestClusterPathThrashing(t *testing.T) {
	s := clusterArray(t, "  access: active-passive\n  transitions: implicit\n  owner: A\n  trespass_on_io: true")
	ports := []int{0, 2} // controller A's port 1, then B's port 3, on both hosts
	a := clusterHost(t, s, "a", ports, "--psp", "VMW_PSP_FIXED")
	b := clusterHost(t, s, "b", ports, "--psp", "VMW_PSP_FIXED")
	for _, m := range []*mount{a, b} {
		require.Equal(t, "VMW_SATP_DEFAULT_AP", m.status().Devices[0].SATP)
	}
	// Host A prefers controller A's port, host B controller B's.
	a.mustCtl("policy", "set", "d0", "--psp", "VMW_PSP_FIXED", "--preferred", a.status().Devices[0].Paths[0].Name)
	b.mustCtl("policy", "set", "d0", "--psp", "VMW_PSP_FIXED", "--preferred", b.status().Devices[0].Paths[1].Name)
	require.Contains(t, b.mustCtl("status"), "(user)")
	evA, evB := followEvents(t, a), followEvents(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := s.status(t).Trespasses
	runs := []*fioRun{clusterFio(ctx, a, 0, 6, 2), clusterFio(ctx, b, 1, 6, 2)}
	runs[0].wait()
	runs[1].wait()
	fioClean(t, runs[:1], a)
	fioClean(t, runs[1:], b)
	thrashed := s.status(t).Trespasses - start
	t.Logf("FIXED on both hosts: %d trespasses; ownership-changed events: host A %d, host B %d",
		thrashed, countEvents(evA, "ownership-changed"), countEvents(evB, "ownership-changed"))
	assert.GreaterOrEqual(t, thrashed, uint64(20), "the LU ping-pongs between the controllers")
	assert.Positive(t, countEvents(evA, "ownership-changed"), "host A sees B's trespasses")
	assert.Positive(t, countEvents(evB, "ownership-changed"), "host B sees A's trespasses")
	assert.Regexp(t, `ownership_changes_seen=[1-9]`, satpConfig(a))
	assert.Positive(t, iscsiPath(a, s.hostURI("a", 0)).Errors, "host A's preferred path met unit attentions")

	// MRU on both hosts: each stays on the path it has; none fails back.
	for _, m := range []*mount{a, b} {
		m.mustCtl("policy", "set", "d0", "--psp", "VMW_PSP_MRU")
	}
	runs = []*fioRun{clusterFio(ctx, a, 0, 2, 2), clusterFio(ctx, b, 1, 2, 2)}
	runs[0].wait()
	runs[1].wait()
	settled := s.status(t).Trespasses // MRU's first I/Os may move the LU once
	runs = []*fioRun{clusterFio(ctx, a, 0, 5, 2), clusterFio(ctx, b, 1, 5, 2)}
	runs[0].wait()
	runs[1].wait()
	fioClean(t, runs[:1], a)
	fioClean(t, runs[1:], b)
	assert.Equal(t, settled, s.status(t).Trespasses, "with MRU on both hosts the trespasses stop")
	// Every trespass left a unit attention for the other host; the lock's
	// heartbeat sends its COMPARE AND WRITE again through them.
	assert.Zero(t, countEvents(evA, "lock-lost"), "host A kept its lock")
	assert.Zero(t, countEvents(evB, "lock-lost"), "host B kept its lock")
	oracleClean(t, a, "d0")
	oracleClean(t, b, "d0")
	a.stopClean(t)
	b.stopClean(t)
}

// lockLoopCounts is `pr lock-loop --json`.
type lockLoopCounts struct {
	Device      string `json:"device"`
	Iterations  int    `json:"iterations"`
	Succeeded   int    `json:"succeeded"`
	Conflicts   int    `json:"conflicts"`
	Retries     int    `json:"retries"`
	Failures    int    `json:"failures"`
	MaxAttempts int    `json:"max_attempts"`
	Error       string `json:"error"`
}

// TestClusterLockLoopContention: the SCSI-2 lock loop (seed: ESXi's
// metadata locks) on four hosts at once, each `mount --host NAME` with
// one path per controller to one LU of array serve. Every host runs `pr
// lock-loop` — RESERVE(6), write its metadata block, hold, RELEASE(6) —
// at the same time: the hosts meet each other's reservations, retry after
// random waits and (with enough retries) get every iteration done; the
// counters add up on every host. A second round with a single attempt
// per iteration shows the give-up path: conflicts become failures.
func TestClusterLockLoopContention(t *testing.T) {
	s := clusterArray(t, "  access: active-active\n  transitions: both\n  owner: A")
	names := []string{"a", "b", "c", "d"}
	var hosts []*mount
	for i, n := range names {
		// The reservations are the lock here: no LU lock record
		// (--lock-sector none), whose heartbeat a reservation would
		// refuse.
		hosts = append(hosts, startMount(t, "--host", n, "--name", "d0", "--lock-sector", "none", "--check-interval", "500ms", "--io-timeout", "3s",
			"--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[i%2], s.iqn),
			"--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[2+i%2], s.iqn)))
	}
	round := func(extra ...string) []lockLoopCounts {
		out := make([]lockLoopCounts, len(hosts))
		done := make(chan struct{})
		for i, m := range hosts {
			go func() {
				defer func() { done <- struct{}{} }()
				args := append([]string{"pr", "lock-loop", "--json", "--iterations", "25", "--hold", "3ms",
					"--backoff-min", "1ms", "--backoff-max", "8ms", "--seed", fmt.Sprint(i + 1), "--offset", fmt.Sprint(i * 4096)}, extra...)
				text, _ := m.ctl(append(args, "d0")...)
				body := text[max(0, strings.Index(text, "{")):]
				if j := strings.LastIndex(body, "}"); j >= 0 {
					body = body[:j+1]
				}
				if err := json.Unmarshal([]byte(body), &out[i]); err != nil {
					out[i].Error = "unparsable output: " + text
				}
			}()
		}
		for range hosts {
			<-done
		}
		return out
	}
	res := round("--retries", "200")
	conflicts := 0
	for i, r := range res {
		t.Logf("host %s: %+v", names[i], r)
		require.Empty(t, r.Error, "host %s", names[i])
		assert.Equal(t, 25, r.Succeeded+r.Failures, "host %s: every iteration succeeded or failed", names[i])
		assert.Equal(t, 0, r.Failures, "host %s: 200 attempts are enough for four hosts", names[i])
		assert.Equal(t, r.Conflicts, r.Retries, "host %s: each conflict was retried (none gave up)", names[i])
		conflicts += r.Conflicts
	}
	assert.Positive(t, conflicts, "four hosts holding the LU 3 ms at a time meet each other's reservations")

	res = round("--retries", "1")
	failures := 0
	for i, r := range res {
		t.Logf("host %s, one attempt: %+v", names[i], r)
		require.Empty(t, r.Error, "host %s", names[i])
		assert.Equal(t, r.Conflicts, r.Failures, "host %s: with one attempt every conflict is a failure", names[i])
		assert.Equal(t, 0, r.Retries, "host %s", names[i])
		failures += r.Failures
	}
	assert.Positive(t, failures, "some iterations gave up")
	for _, m := range hosts {
		m.stopClean(t)
	}
}

// prHost mounts d0 as `--host name` with the integrity checker, one path
// to each controller (ports 1 and 3, or 2 and 4), round robin. The
// persistent reservation is the lock: no LU lock record (--lock-sector
// none), whose heartbeat the other host's reservation would refuse.
func prHost(t *testing.T, s *arrayServer, name string, first int) *mount {
	t.Helper()
	return startMount(t, "--host", name, "--name", "d0", "--lock-sector", "none", "--verify", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--check-interval", "500ms", "--io-timeout", "5s",
		"--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[first], s.iqn),
		"--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[2+first], s.iqn))
}

// TestClusterFencingUnderFio: hosts A and B registered; A holds a write
// exclusive reservation and writes 16 MiB with fio while the array holds
// each of A's writes 2 s before it executes (writes in flight at every
// moment). B preempts and aborts A: A's in-flight writes are aborted by
// the array and never execute, A's later writes fail with EBADE (fio on A
// reports errors), and B then writes the same 16 MiB under fio --verify
// with 0 errors; well after A's held writes would have landed, B's
// integrity checker re-reads every block B wrote through the device and
// every path and finds each as B wrote it: none of A's writes landed
// after the preemption.
func TestClusterFencingUnderFio(t *testing.T) {
	s := clusterArray(t, "  access: active-active\n  transitions: both\n  owner: A")
	a := prHost(t, s, "a", 0)
	b := prHost(t, s, "b", 1)
	a.mustCtl("pr", "--register", "--param-sark", "0xa", "d0")
	b.mustCtl("pr", "--register", "--param-sark", "0xb", "d0")
	a.mustCtl("pr", "--reserve", "--param-rk", "0xa", "--prout-type", "WE", "d0")

	s.ctl(t, "fault", "inject", "--initiator", "iqn.2026-12.io.mpathfs:host.a", "--op", "write", "--delay", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runA := startFio(ctx, "--name=a", "--filename="+a.file("d0"), "--direct=1", "--rw=randwrite", "--bs=4k",
		"--ioengine=libaio", "--iodepth=16", "--size=16M", "--time_based", "--runtime=8", "--randseed=1")
	time.Sleep(3 * time.Second) // A's writes in flight, held by the array
	var st struct {
		Sessions []struct {
			Initiator string `json:"initiator"`
			Tasks     int    `json:"tasks"`
		} `json:"sessions"`
	}
	require.NoError(t, json.Unmarshal([]byte(s.ctl(t, "status", "--json")), &st))
	held := 0
	for _, se := range st.Sessions {
		if se.Initiator == "iqn.2026-12.io.mpathfs:host.a" {
			held += se.Tasks
		}
	}
	require.Positive(t, held, "A has writes held in the array when B preempts")
	b.mustCtl("pr", "--preempt-abort", "--param-rk", "0xb", "--param-sark", "0xa", "--prout-type", "WE", "d0")
	res := prJSON(t, b, "--read-reservation", "d0").Reservation
	require.NotNil(t, res)
	assert.Equal(t, uint64(0xb), res.Key, "B holds the reservation")

	_, outA, errA := runA.wait()
	require.Error(t, errA, "fio on A must fail once A is preempted")
	assert.Contains(t, outA, "Invalid exchange", "A's writes fail with EBADE")
	assert.Equal(t, syscall.EBADE, writeBlock(t, a, 0), "A is fenced: EBADE")

	runB := clusterFio(ctx, b, 0, 6, 8) // B's 16 MiB from offset 0: A's range
	fioClean(t, []*fioRun{runB}, b)
	time.Sleep(3 * time.Second) // past A's 2 s hold: a write that escaped would have landed by now
	oracleClean(t, b, "d0")
	s.ctl(t, "fault", "clear", "--all")
	b.stopClean(t)
	a.stop()
}

// TestClusterHostKilledHoldingReservation: host A holds a write exclusive
// reservation and writes under fio when it is killed (SIGKILL, by its
// PID): its persistent reservation outlives it, so host B's writes fail
// with EBADE. B preempts A's key and takes the reservation; B then writes
// under fio --verify with 0 errors and its integrity checker finds every
// block as B wrote it.
func TestClusterHostKilledHoldingReservation(t *testing.T) {
	s := clusterArray(t, "  access: active-active\n  transitions: both\n  owner: A")
	a := prHost(t, s, "a", 0)
	b := prHost(t, s, "b", 1)
	a.mustCtl("pr", "--register", "--param-sark", "0xa", "d0")
	b.mustCtl("pr", "--register", "--param-sark", "0xb", "d0")
	a.mustCtl("pr", "--reserve", "--param-rk", "0xa", "--prout-type", "WE", "d0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	actx, acancel := context.WithCancel(ctx)
	runA := startFio(actx, "--name=a", "--filename="+a.file("d0"), "--direct=1", "--rw=randwrite", "--bs=4k",
		"--ioengine=libaio", "--iodepth=16", "--size=16M", "--time_based", "--runtime=30", "--randseed=1")
	time.Sleep(2 * time.Second)
	require.NoError(t, syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL))
	<-a.exited
	acancel()
	runA.wait()
	_ = exec.Command("fusermount3", "-u", "-z", a.dir).Run() // the killed host's mount point

	res := prJSON(t, b, "--read-reservation", "d0").Reservation
	require.NotNil(t, res)
	assert.Equal(t, uint64(0xa), res.Key, "the killed host's reservation outlives it")
	assert.Equal(t, syscall.EBADE, writeBlock(t, b, 0), "B is refused while A's reservation stands")

	b.mustCtl("pr", "--preempt", "--param-rk", "0xb", "--param-sark", "0xa", "--prout-type", "WE", "d0")
	res = prJSON(t, b, "--read-reservation", "d0").Reservation
	require.NotNil(t, res)
	assert.Equal(t, uint64(0xb), res.Key, "B holds the reservation")
	assert.NotContains(t, prJSON(t, b, "--read-keys", "d0").Keys, uint64(0xa), "A's registrations are gone")

	runB := clusterFio(ctx, b, 0, 6, 8)
	fioClean(t, []*fioRun{runB}, b)
	oracleClean(t, b, "d0")
	b.stopClean(t)
}

// TestClusterScenario: a cluster scenario file starts its own array server
// (a config with free ports) and two hosts, runs fio --verify on each
// host's range, moves host a to MRU, fails and restores controller A, and
// runs `mpathfs verify` on both hosts; `scenario run` exits 0, writes one
// report per host, each a PASS, and leaves nothing mounted or running.
func TestClusterScenario(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "fio")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`name: lab
target: iqn.2026-01.io.mpathfs.e2e:scn
state_dir: %s
alua: {access: active-active, transitions: both, owner: A}
lus:
  - {name: data, lun: 0, file: %s, size: 64M}
controllers:
  - {name: A, ports: [{id: 1, portal: "127.0.0.1:0"}, {id: 2, portal: "127.0.0.1:0"}]}
  - {name: B, ports: [{id: 3, portal: "127.0.0.1:0"}, {id: 4, portal: "127.0.0.1:0"}]}
`, filepath.Join(dir, "state"), filepath.Join(dir, "lu.img"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "array.yaml"), []byte(cfg), 0o600))
	fioArgs := "--direct=1 --rw=randrw --bs=4k --ioengine=libaio --iodepth=8 --size=8M --time_based --runtime=8 --verify=crc32c --verify_fatal=1 --verify_state_save=0"
	scn := fmt.Sprintf(`seed 3
end 11s
array serve array.yaml
host a --name d0 --verify --multi-writer --check-interval 300ms --path iscsi://${portal1}/${target}/0?initiator=iqn.2026-01.io.mpathfs.e2e:scn-a --path iscsi://${portal3}/${target}/0?initiator=iqn.2026-01.io.mpathfs.e2e:scn-a
host b --name d0 --verify --multi-writer --check-interval 300ms --path iscsi://${portal2}/${target}/0?initiator=iqn.2026-01.io.mpathfs.e2e:scn-b --path iscsi://${portal4}/${target}/0?initiator=iqn.2026-01.io.mpathfs.e2e:scn-b
at 0s host a exec fio --name=a --filename=${dev} --offset=0 %[1]s
at 0s host b exec fio --name=b --filename=${dev} --offset=32M %[1]s
at 2s host a policy d0 psp VMW_PSP_MRU
at 4s array lab controller A fail
at 6s array lab controller A restore
at 10s host a exec mpathfs verify d0
at 10s host b exec mpathfs verify d0
`, fioArgs)
	file := filepath.Join(dir, "cluster.scn")
	require.NoError(t, os.WriteFile(file, []byte(scn), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "scenario", "run", "--quiet", "--report", filepath.Join(dir, "r.md"), file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, h := range []string{"a", "b"} {
		rep, err := os.ReadFile(filepath.Join(dir, "r."+h+".md"))
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(rep), "result: PASS", "host %s", h)
		assert.Contains(t, string(out), "report: "+filepath.Join(dir, "r."+h+".md"))
	}
	assert.Contains(t, string(out), "no lost, stale, torn or misdirected writes")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	assert.NotContains(t, string(mounts), "mpathfs-cluster-", "the runner unmounted its hosts")
}

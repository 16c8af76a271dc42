package arrayd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/scsi"
)

const example = `name: lab
target: iqn.2026-12.com.example:lab
alua:
  access: active-active
  transitions: both
  owner: A
  persist: true
lus:
  - name: data
    lun: 0
    file: %s
    size: 8M
    wwid: naa.600d0230000000000000000000abcdef
controllers:
  - name: A
    tpg: 1
    ports:
      - {id: 1, portal: "127.0.0.1:0"}
      - {id: 2, portal: "127.0.0.1:0"}
  - name: B
    tpg: 2
    ports:
      - {id: 3, portal: "127.0.0.1:0"}
chap:
  - {initiator: iqn.2026-12.com.example:host1, secret: "twelve-chars"}
`

func exampleConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	c, err := Parse([]byte(sprintf(example, filepath.Join(dir, "data.img"))))
	require.NoError(t, err)
	c.StateDir = filepath.Join(dir, "state")
	return c
}

func TestParseExample(t *testing.T) {
	c := exampleConfig(t)
	assert.Equal(t, "lab", c.Name)
	assert.True(t, *c.LUs[0].Create, "create defaults to true")
	ac, err := c.ArrayConfig()
	require.NoError(t, err)
	assert.Equal(t, array.ModeALUA, ac.Mode)
	assert.True(t, ac.Implicit && ac.Explicit)
	assert.Equal(t, []uint16{1, 2}, ac.Controllers[0].Ports)
	n, err := c.LUs[0].Bytes()
	require.NoError(t, err)
	assert.EqualValues(t, 8<<20, n)
}

func TestDefaultIsValid(t *testing.T) {
	c, err := Default(t.TempDir()).Validated()
	require.NoError(t, err)
	require.Len(t, c.Controllers, 2)
	for _, ct := range c.Controllers {
		assert.Len(t, ct.Ports, 2)
	}
	n, err := c.LUs[0].Bytes()
	require.NoError(t, err)
	assert.EqualValues(t, 1<<30, n)
}

// Bad input gets an error that names what is wrong and how to fix it.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"target: iqn.2026-12.x:y\nbogus: 1\n", `unknown key "bogus" in the top level`},
		{"target: iqn.2026-12.x:y\nlus:\n  - {file: /x, size: 1G, colour: red}\n", `unknown key "colour" in an entry of lus`},
		{"", "the config is empty"},
		{"lus: []\n", "no target"},
		{"target: not-an-iqn\n", "is not an iSCSI name"},
		{"target: iqn.2026-12.x:y\n", "no lus"},
		{"target: iqn.2026-12.x:y\nlus: [{file: /x, size: lots}]\n", `size "lots"`},
		{"target: iqn.2026-12.x:y\nlus: [{file: /x, size: 1G}]\n", "no controllers"},
		{"target: iqn.2026-12.x:y\nlus: [{file: /x, size: 1G}]\ncontrollers: [{name: A, ports: [{id: 1, portal: localhost}]}]\n", "want IP:PORT"},
		{"target: iqn.2026-12.x:y\nlus: [{file: /x, size: 1G}]\ncontrollers: [{name: A, ports: [{id: 1, portal: '127.0.0.1:1'}]}, {name: B, ports: [{id: 1, portal: '127.0.0.1:2'}]}]\n", "port 1 is on controllers A and B"},
		{"target: iqn.2026-12.x:y\nalua: {access: sideways}\n", "want active-active or active-passive"},
		{"target: iqn.2026-12.x:y\nalua: {access: active-passive, transitions: explicit}\nlus: [{file: /x, size: 1G}]\ncontrollers: [{name: A, ports: [{id: 1, portal: '127.0.0.1:1'}]}]\n", "trespass only"},
		{"target: iqn.2026-12.x:y\nlus: [{file: /x, size: 1G}]\ncontrollers: [{name: A, ports: [{id: 1, portal: '127.0.0.1:1'}]}]\nchap: [{initiator: iqn.2026-12.h:1, secret: short}]\n", "12 to 16"},
		{"target: iqn.2026-12.x:y\nalua: {transition: soon}\n", "is not a duration"},
	} {
		_, err := Parse([]byte(tc.yaml))
		require.Error(t, err, tc.yaml)
		assert.Contains(t, err.Error(), tc.want, tc.yaml)
	}
}

func TestParseFault(t *testing.T) {
	f, err := ParseFault([]string{"--port", "3", "--initiator=iqn.2026-12.h:1", "--lu", "0", "--op", "read,write", "--lba", "0-2047", "--sense", "02/04/0a", "--delay", "5ms", "--count", "2"})
	require.NoError(t, err)
	assert.Equal(t, Fault{Port: 3, Initiator: "iqn.2026-12.h:1", LUNs: []uint64{0}, Ops: []string{"read", "write"}, LBA: "0-2047", Sense: "02/04/0a", Delay: 5 * time.Millisecond, Count: 2}, f)
	back, err := ParseFault(f.Args())
	require.NoError(t, err)
	assert.Equal(t, f, back, "Args reads back")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "does nothing"},
		{[]string{"--hang", "--status", "busy"}, "give one of"},
		{[]string{"--status", "tired"}, "want busy, task-set-full or reservation-conflict"},
		{[]string{"--error", "bad-luck"}, "want path-failure"},
		{[]string{"--sense", "zz"}, "KEY/ASC/ASCQ"},
		{[]string{"--hang", "--lba", "9-1"}, "FROM <= TO"},
		{[]string{"--hang", "--op", "dance"}, `--op "dance"`},
		{[]string{"--colour", "red"}, "unknown flag --colour"},
		{[]string{"--delay"}, "needs a value"},
		{[]string{"oops"}, "unexpected argument"},
	} {
		_, err := ParseFault(tc.args)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
	}
	f, err = ParseFault([]string{"--error", "path-failure"})
	require.NoError(t, err)
	assert.True(t, f.drops(), "a path failure at the array is a dropped connection")
}

func TestClassify(t *testing.T) {
	read10 := []byte{0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0}
	cls, lba, n, ranged := classify(read10)
	assert.Equal(t, "read", cls)
	assert.EqualValues(t, 0x1000, lba)
	assert.EqualValues(t, 8, n)
	assert.True(t, ranged)
	write16 := []byte{0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0}
	cls, lba, n, _ = classify(write16)
	assert.Equal(t, "write", cls)
	assert.EqualValues(t, 5, lba)
	assert.EqualValues(t, 1, n)
	ws := []byte{0x41, 0x08, 0, 0, 0, 0, 0, 0, 1, 0}
	cls, _, _, _ = classify(ws)
	assert.Equal(t, "discard", cls, "WRITE SAME with UNMAP")
	for cdb, want := range map[byte]string{0x00: "probe", 0x35: "flush", 0x42: "discard", 0x12: "other"} {
		cls, _, _, _ = classify([]byte{cdb, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		assert.Equal(t, want, cls)
	}
}

// fakeStack stands in for the iSCSI target and the logical units.
type fakeTransport struct {
	mu      sync.Mutex
	offline map[uint16]bool
	drop    func(scsi.Nexus, *scsi.Command) bool
	lns     []net.Listener
}

func (f *fakeTransport) Serve(l net.Listener, p Portal) error {
	f.mu.Lock()
	f.lns = append(f.lns, l)
	f.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}
func (f *fakeTransport) SetPortOffline(p uint16, off bool) {
	f.mu.Lock()
	f.offline[p] = off
	f.mu.Unlock()
}
func (f *fakeTransport) DropInitiator(name string) int {
	if name == "iqn.2026-12.h:1" {
		return 2
	}
	return 0
}
func (f *fakeTransport) Sessions() []Session { return nil }
func (f *fakeTransport) SetDrop(d func(scsi.Nexus, *scsi.Command) bool) {
	f.drop = d
}
func (f *fakeTransport) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.lns {
		l.Close()
	}
	return nil
}

type fakeUnits struct {
	mu     sync.Mutex
	faults map[int]Fault
	next   int
}

func (u *fakeUnits) AddFault(f Fault) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.next++
	u.faults[u.next] = f
	return u.next, nil
}
func (u *fakeUnits) RemoveFault(id int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.faults[id]
	delete(u.faults, id)
	return ok
}
func (u *fakeUnits) LiveFaults() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	var ids []int
	for id := range u.faults {
		ids = append(ids, id)
	}
	return ids
}
func (u *fakeUnits) Reservations() any               { return []string{} }
func (u *fakeUnits) Close(ctx context.Context) error { return nil }

func fakeStack(tr *fakeTransport, u *fakeUnits) Stack {
	return func(cfg Config, arr *array.Array, stores []backends.Backend) (Transport, Units, error) {
		return tr, u, nil
	}
}

func newFakeServer(t *testing.T, c Config) (*Server, *fakeTransport, *fakeUnits) {
	t.Helper()
	tr, u := &fakeTransport{offline: map[uint16]bool{}}, &fakeUnits{faults: map[int]Fault{}}
	s, err := New(c, fakeStack(tr, u))
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { s.Close() })
	return s, tr, u
}

func TestServerPortalsStoreAndFaults(t *testing.T) {
	c := exampleConfig(t)
	s, tr, u := newFakeServer(t, c)
	fi, err := os.Stat(c.LUs[0].File)
	require.NoError(t, err, "the store is created")
	assert.EqualValues(t, 8<<20, fi.Size())
	for _, p := range s.Portals() {
		_, port, err := net.SplitHostPort(p.Addr)
		require.NoError(t, err)
		assert.NotEqual(t, "0", port, "port 0 is replaced by the one picked")
		conn, err := net.Dial("tcp", p.Addr)
		require.NoError(t, err, "portal %s listens", p.Addr)
		conn.Close()
	}

	// A drop fault on port 3 for reads, twice.
	f, err := s.Inject(Fault{Port: 3, Ops: []string{"read"}, DropConnection: true, Count: 2})
	require.NoError(t, err)
	read := &scsi.Command{CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}}
	assert.False(t, tr.drop(scsi.Nexus{TargetPort: 1}, read), "other port")
	assert.False(t, tr.drop(scsi.Nexus{TargetPort: 3}, &scsi.Command{CDB: []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}}), "a write")
	assert.True(t, tr.drop(scsi.Nexus{TargetPort: 3}, read))
	assert.True(t, tr.drop(scsi.Nexus{TargetPort: 3}, read))
	assert.False(t, tr.drop(scsi.Nexus{TargetPort: 3}, read), "expired after --count 2")
	assert.Empty(t, s.Faults(), "an expired fault is no longer listed")
	_, err = s.Clear(f.ID)
	require.NoError(t, err)

	// Other faults go to the units.
	g, err := s.Inject(Fault{Initiator: "iqn.2026-12.h:1", Status: "busy"})
	require.NoError(t, err)
	assert.Len(t, u.LiveFaults(), 1)
	assert.Equal(t, []Fault{g}, s.Faults())
	n, err := s.Clear(0)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Empty(t, u.LiveFaults())
	_, err = s.Clear(99)
	require.ErrorContains(t, err, "no array fault 99")
	_, err = s.Inject(Fault{Port: 9, Hang: true})
	require.ErrorContains(t, err, "no port 9")

	// Ports and sessions.
	require.NoError(t, s.SetPortOnline(2, false))
	assert.True(t, tr.offline[2])
	require.ErrorContains(t, s.SetPortOnline(7, false), "no port 7")
	dropped, err := s.DropSessions("iqn.2026-12.h:1")
	require.NoError(t, err)
	assert.Equal(t, 2, dropped)
	_, err = s.DropSessions("iqn.2026-12.h:nobody")
	require.ErrorContains(t, err, "no connection")
}

// A failed controller's ports leave the network, and the ALUA state
// survives a restart when alua.persist is set.
func TestALUAStatePersists(t *testing.T) {
	c := exampleConfig(t)
	s, tr, _ := newFakeServer(t, c)
	require.NoError(t, s.ArrayAction("fail", "A", nil, ""))
	assert.True(t, tr.offline[1] && tr.offline[2], "controller A's ports are offline")
	st := s.Array().Status()
	require.Equal(t, "B", st.Owner, "implicit transitions move ownership off the failed controller")
	require.NoError(t, s.Close())

	s2, _, _ := newFakeServer(t, c)
	st2 := s2.Array().Status()
	assert.Equal(t, "B", st2.Owner)
	for _, ct := range st2.Controllers {
		assert.Equal(t, ct.Name != "A", ct.Up, "controller %s", ct.Name)
	}
	requireReach(t, s2, "A", false, "a controller failed in the persisted state starts off the network")
	requireReach(t, s2, "B", true, "the other controller's portals listen")
	require.NoError(t, s2.ArrayAction("restore", "A", nil, ""))
	requireReach(t, s2, "A", true, "restored: its portals listen again")
	require.ErrorContains(t, s2.ArrayAction("explode", "A", nil, ""), "unknown array action")
}

// requireReach dials every portal of a controller: each must accept (up)
// or refuse the connection (down: a port off the network is refused at
// connect, never accepted and closed).
func requireReach(t *testing.T, s *Server, controller string, up bool, msg string) {
	t.Helper()
	n := 0
	for _, p := range s.Portals() {
		if p.Controller != controller {
			continue
		}
		n++
		conn, err := net.Dial("tcp", p.Addr)
		if up {
			require.NoError(t, err, "%s: port %d at %s", msg, p.Port, p.Addr)
			conn.Close()
			continue
		}
		if err == nil {
			conn.Close()
		}
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "%s: port %d at %s", msg, p.Port, p.Addr)
	}
	require.Positive(t, n, "controller %s has portals", controller)
}

// TestOfflinePortRefuses: a port taken offline on its own, or with its
// controller, refuses new connections; back online (and only when its
// controller is up too) it listens again on the same address.
func TestOfflinePortRefuses(t *testing.T) {
	s, tr, _ := newFakeServer(t, exampleConfig(t))
	requireReach(t, s, "A", true, "at start")
	addrs := map[uint16]string{}
	for _, p := range s.Portals() {
		addrs[p.Port] = p.Addr
	}
	require.NoError(t, s.ArrayAction("fail", "A", nil, ""))
	requireReach(t, s, "A", false, "controller A failed")
	requireReach(t, s, "B", true, "controller B untouched")

	// A port taken offline by hand stays off through its controller's
	// restore; a port put online while its controller is failed stays off.
	var portA uint16
	for _, p := range s.Portals() {
		if p.Controller == "A" {
			portA = p.Port
			break
		}
	}
	require.NoError(t, s.SetPortOnline(portA, false))
	require.NoError(t, s.ArrayAction("restore", "A", nil, ""))
	for _, p := range s.Portals() {
		if p.Controller != "A" {
			continue
		}
		conn, err := net.Dial("tcp", p.Addr)
		if p.Port == portA {
			require.ErrorIs(t, err, syscall.ECONNREFUSED, "port %d was taken offline on its own", p.Port)
			assert.True(t, tr.offline[p.Port])
		} else {
			require.NoError(t, err, "port %d came back with its controller", p.Port)
			conn.Close()
		}
	}
	require.NoError(t, s.SetPortOnline(portA, true))
	requireReach(t, s, "A", true, "every port of A back")
	for _, p := range s.Portals() {
		assert.Equal(t, addrs[p.Port], p.Addr, "port %d listens on the address it had", p.Port)
	}
}

func TestStoreSizeMismatch(t *testing.T) {
	c := exampleConfig(t)
	require.NoError(t, os.WriteFile(c.LUs[0].File, make([]byte, 4096), 0o600))
	_, err := New(c, fakeStack(&fakeTransport{offline: map[uint16]bool{}}, &fakeUnits{faults: map[int]Fault{}}))
	require.ErrorContains(t, err, "has 4096 bytes but the config says size 8M")
}

// The control API answers on its socket, and the mount-shaped endpoints
// work too.
func TestControlAPI(t *testing.T) {
	c := exampleConfig(t)
	s, _, _ := newFakeServer(t, c)
	sock := filepath.Join(t.TempDir(), "a.sock")
	cs, err := s.ListenControl(sock)
	require.NoError(t, err)
	defer cs.Close()
	cl, err := control.Dial(sock)
	require.NoError(t, err)
	ctx := context.Background()
	var st Status
	require.NoError(t, cl.Get(ctx, EndpointServer, &st))
	assert.Equal(t, "iqn.2026-12.com.example:lab", st.Target)
	assert.Len(t, st.Portals, 3)
	var f Fault
	require.NoError(t, cl.Post(ctx, EndpointInject, Fault{LUNs: []uint64{0}, Delay: time.Second, Ops: []string{"write"}}, &f))
	assert.Equal(t, 1, f.ID)
	assert.Equal(t, time.Second, f.Delay, "durations travel as strings and come back")
	err = cl.Post(ctx, EndpointInject, Fault{Status: "sleepy"}, &f)
	require.ErrorContains(t, err, "want busy")
	var list struct {
		Faults []Fault `json:"faults"`
	}
	require.NoError(t, cl.Get(ctx, EndpointFaults, &list))
	assert.Len(t, list.Faults, 1)
	var arrays struct {
		Arrays map[string]array.Status `json:"arrays"`
	}
	require.NoError(t, cl.Get(ctx, "/v1/arrays", &arrays))
	assert.Contains(t, arrays.Arrays, "lab")
	var as array.Status
	require.NoError(t, cl.Post(ctx, "/v1/array", ArrayRequest{Array: "lab", Action: "transfer-ownership", Controller: "B"}, &as))
	assert.Equal(t, "B", as.Owner)
	err = cl.Post(ctx, "/v1/array", ArrayRequest{Array: "other", Action: "fail", Controller: "A"}, &as)
	require.ErrorContains(t, err, "this server serves array lab")
	var cr ClearReply
	require.NoError(t, cl.Post(ctx, EndpointClear, ClearRequest{All: true}, &cr))
	assert.Equal(t, 1, cr.Cleared)
}

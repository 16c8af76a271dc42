package arrayd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/scsi"
)

// Portal is one port's portal as the transport serves it.
type Portal struct {
	Addr         string // host:port as listened on
	TPGT         uint16 // iSCSI target portal group tag (the TPG id)
	RelativePort uint16
	TPG          uint16
}

// Session is one iSCSI session, for status.
type Session struct {
	Initiator  string `json:"initiator"`
	ISID       string `json:"isid"`
	TSIH       uint16 `json:"tsih"`
	Portal     string `json:"portal"`
	Remote     string `json:"remote"`
	TargetPort uint16 `json:"target_port"`
	TPG        uint16 `json:"tpg"`
	Tasks      int    `json:"tasks"`
	Discovery  bool   `json:"discovery,omitempty"`
}

// Transport is what the server needs of the iSCSI target.
type Transport interface {
	// Serve accepts connections on l for p until l fails or the
	// transport closes.
	Serve(l net.Listener, p Portal) error
	SetPortOffline(port uint16, offline bool)
	// DropInitiator drops every connection of an initiator and says how
	// many.
	DropInitiator(name string) int
	Sessions() []Session
	// SetDrop installs the hook that decides, per command, whether the
	// connection it came on drops (faults with --drop-connection).
	SetDrop(func(n scsi.Nexus, cmd *scsi.Command) bool)
	Close() error
}

// Units is what the server needs of the logical units.
type Units interface {
	// AddFault installs a fault that answers, delays, hangs or lands
	// late (never one that drops) and returns the units' id for it.
	AddFault(f Fault) (int, error)
	RemoveFault(id int) bool
	// LiveFaults are the ids still in force (a fault with a count
	// removes itself).
	LiveFaults() []int
	// Reservations is each LU's reservation state, for status.
	Reservations() any
	Close(ctx context.Context) error
}

// Stack builds the logical units over the stores (one per cfg.LUs entry,
// in order) and the iSCSI target serving them; cmd/mpathfs passes the
// one made of packages array and iscsi.
type Stack func(cfg Config, arr *array.Array, stores []backends.Backend) (Transport, Units, error)

// BoundPortal is a port and where it listens.
type BoundPortal struct {
	Port       uint16 `json:"port"`
	Controller string `json:"controller"`
	TPG        uint16 `json:"tpg"`
	Addr       string `json:"portal"`
	Netns      string `json:"netns,omitempty"`
	Online     bool   `json:"online"`
}

// Server is a running array server.
type Server struct {
	cfg    Config
	arr    *array.Array
	tr     Transport
	units  Units
	stores []backends.Backend

	mu      sync.Mutex
	portals []BoundPortal
	faults  []*armed
	nextID  int
	drops   atomic.Int32 // drop faults in force: the hot path's shortcut
	// lns: the listener of each port that is on the network (a port
	// offline, on its own or with its controller, has none: connecting
	// to it is refused, as to a port whose link is down).
	lns    map[uint16]net.Listener
	wg     sync.WaitGroup
	closed bool
}

// armed is a fault in force: the units' id for it, or a drop rule the
// server evaluates itself.
type armed struct {
	Fault
	unitID  int // 0: a drop rule
	from    uint64
	to      uint64
	fired   int
	expired bool
}

// New opens (creating where asked) the stores, builds the ALUA core
// (restoring its persisted state) and the stack. Start serves it.
func New(cfg Config, stack Stack) (*Server, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	ac, err := cfg.ArrayConfig()
	if err != nil {
		return nil, err
	}
	arr, err := array.New(ac)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, arr: arr}
	if err := s.restoreALUA(); err != nil {
		return nil, err
	}
	for _, lu := range cfg.LUs {
		b, err := openStore(lu)
		if err != nil {
			s.closeStores()
			return nil, err
		}
		s.stores = append(s.stores, b)
	}
	s.tr, s.units, err = stack(cfg, arr, s.stores)
	if err != nil {
		s.closeStores()
		return nil, err
	}
	s.tr.SetDrop(s.shouldDrop)
	for _, ct := range cfg.Controllers {
		for _, p := range ct.Ports {
			s.portals = append(s.portals, BoundPortal{Port: p.ID, Controller: ct.Name, TPG: ct.TPG, Addr: p.Portal, Netns: p.Netns, Online: true})
		}
	}
	return s, nil
}

// openStore opens an LU's file, creating it sparse when it is missing
// and the LU says create.
func openStore(lu LU) (backends.Backend, error) {
	want := int64(0)
	if lu.Size != "" {
		want, _ = lu.Bytes()
	}
	fi, err := os.Stat(lu.File)
	switch {
	case errors.Is(err, os.ErrNotExist) && *lu.Create:
		if want == 0 {
			return nil, fmt.Errorf("LU %s: %s does not exist: give a size to create it", lu.Name, lu.File)
		}
		if err := os.MkdirAll(filepath.Dir(lu.File), 0o755); err != nil {
			return nil, fmt.Errorf("LU %s: %w", lu.Name, err)
		}
		f, err := os.OpenFile(lu.File, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("LU %s: %w", lu.Name, err)
		}
		err = f.Truncate(want)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("LU %s: sizing %s: %w", lu.Name, lu.File, err)
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("LU %s: %s does not exist (create: false): create it first, e.g. truncate -s %s %s", lu.Name, lu.File, lu.Size, lu.File)
	case err != nil:
		return nil, fmt.Errorf("LU %s: %w", lu.Name, err)
	case fi.Mode().IsRegular() && want != 0 && fi.Size() != want:
		return nil, fmt.Errorf("LU %s: %s has %d bytes but the config says size %s (%d bytes): fix the size or the file", lu.Name, lu.File, fi.Size(), lu.Size, want)
	}
	b, err := backends.OpenFile(lu.File, backends.FileOptions{})
	if err != nil {
		return nil, fmt.Errorf("LU %s: %w", lu.Name, err)
	}
	return b, nil
}

func (s *Server) closeStores() {
	for _, b := range s.stores {
		b.Close()
	}
	s.stores = nil
}

// Start listens on every port's portal (port 0: a free one) and serves.
// On error nothing is left listening.
func (s *Server) Start() error {
	var lns []net.Listener
	for i := range s.portals {
		bp := &s.portals[i]
		ln, err := listenIn(bp.Netns, bp.Addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("port %d (controller %s): portal %s: %w", bp.Port, bp.Controller, bp.Addr, err)
		}
		bp.Addr = ln.Addr().String()
		lns = append(lns, ln)
	}
	down := map[string]bool{} // controllers failed in the persisted state
	for _, c := range s.arr.Status().Controllers {
		down[c.Name] = !c.Up
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lns = map[uint16]net.Listener{}
	for i, ln := range lns {
		bp := s.portals[i]
		if down[bp.Controller] || !bp.Online {
			// Bound once to fix its address; off the network until the
			// port or its controller comes back.
			s.tr.SetPortOffline(bp.Port, true)
			ln.Close()
			continue
		}
		s.serveLocked(bp, ln)
	}
	return nil
}

// serveLocked serves a port's portal on ln; s.mu is held.
func (s *Server) serveLocked(bp BoundPortal, ln net.Listener) {
	s.lns[bp.Port] = ln
	p := Portal{Addr: bp.Addr, TPGT: bp.TPG, RelativePort: bp.Port, TPG: bp.TPG}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.tr.Serve(ln, p)
	}()
}

// setPortOffline takes a port off the network or puts it back. Off: the
// transport drops its connections and its listener closes, so a new
// connection is refused (an initiator's connect fails at once, before
// any login; accepting and closing instead makes open-iscsi bind a dead
// connection to its kernel session and loop in connection cleanup,
// never logging in again after the port returns). On: the portal listens
// again on the address it had.
func (s *Server) setPortOffline(port uint16, offline bool) error {
	s.tr.SetPortOffline(port, offline)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.lns == nil {
		return nil // not started, or closing
	}
	ln, listening := s.lns[port]
	if offline {
		if listening {
			delete(s.lns, port)
			ln.Close()
		}
		return nil
	}
	if listening {
		return nil
	}
	for _, bp := range s.portals {
		if bp.Port != port {
			continue
		}
		ln, err := listenIn(bp.Netns, bp.Addr)
		if err != nil {
			return fmt.Errorf("port %d (controller %s) back online: listening on %s again: %w", bp.Port, bp.Controller, bp.Addr, err)
		}
		s.serveLocked(bp, ln)
	}
	return nil
}

// listenIn listens on addr, inside the network namespace netns when one
// is named. The namespace switch happens on a thread locked to a
// goroutine that ends without unlocking it, so the thread is discarded
// and no other goroutine ever runs in the namespace by accident.
func listenIn(netns, addr string) (net.Listener, error) {
	if netns == "" {
		return net.Listen("tcp", addr)
	}
	path := netns
	if !strings.Contains(netns, "/") {
		path = "/run/netns/" + netns
	}
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(path)
		if err != nil {
			ch <- result{err: fmt.Errorf("network namespace %s: %w", netns, err)}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("entering network namespace %s: %w", netns, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// Config is the server's configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Portals lists the ports and their portals (the real port after Start).
func (s *Server) Portals() []BoundPortal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]BoundPortal(nil), s.portals...)
}

// Array is the ALUA core.
func (s *Server) Array() *array.Array { return s.arr }

// Close stops serving: the transport closes every connection and waits
// for the commands in progress, then the units and stores close.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	err := s.tr.Close()
	for _, l := range lns {
		l.Close() // a Serve that had not begun yet must not wait forever
	}
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e := s.units.Close(ctx); err == nil {
		err = e
	}
	s.closeStores()
	s.arr.Close()
	return err
}

// ALUA state persistence: the owner and the failed controllers.
type aluaState struct {
	Owner string   `json:"owner"`
	Down  []string `json:"down,omitempty"`
}

func (s *Server) aluaFile() string { return filepath.Join(s.cfg.StateDir, "alua.json") }

func (s *Server) restoreALUA() error {
	if !s.cfg.ALUA.Persist {
		return nil
	}
	b, err := os.ReadFile(s.aluaFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st aluaState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w (remove it to start from the configured state)", s.aluaFile(), err)
	}
	if st.Owner != "" && st.Owner != s.arr.Status().Owner {
		if err := s.arr.TransferOwnership(st.Owner); err != nil {
			return fmt.Errorf("%s: owner %s: %w (remove it to start from the configured state)", s.aluaFile(), st.Owner, err)
		}
	}
	for _, c := range st.Down {
		if err := s.arr.FailController(c); err != nil {
			return fmt.Errorf("%s: controller %s: %w (remove it to start from the configured state)", s.aluaFile(), c, err)
		}
	}
	return nil
}

// saveALUA writes the ALUA state (write to a temporary file, rename).
func (s *Server) saveALUA() error {
	if !s.cfg.ALUA.Persist {
		return nil
	}
	st := s.arr.Status()
	a := aluaState{Owner: st.Owner}
	for _, c := range st.Controllers {
		if !c.Up {
			a.Down = append(a.Down, c.Name)
		}
	}
	b, _ := json.MarshalIndent(a, "", "  ")
	tmp := s.aluaFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.aluaFile())
}

// ArrayAction is one change of the ALUA state.
func (s *Server) ArrayAction(action, controller string, tpg *int, state string) error {
	var err error
	switch action {
	case "controller-fail", "fail":
		err = s.arr.FailController(controller)
		if err == nil {
			err = s.setControllerPorts(controller, false)
		}
	case "controller-restore", "restore":
		err = s.arr.RestoreController(controller)
		if err == nil {
			err = s.setControllerPorts(controller, true)
		}
	case "transfer-ownership", "transfer":
		err = s.arr.TransferOwnership(controller)
	case "tpg-state", "set-tpg":
		if tpg == nil {
			return errors.New("set-tpg needs a tpg")
		}
		var st scsi.State
		if st, err = parseState(state); err == nil {
			err = s.arr.ForceTPGState(uint16(*tpg), st)
		}
	default:
		return fmt.Errorf("unknown array action %q (want fail, restore, transfer or set-tpg)", action)
	}
	if err != nil {
		return err
	}
	return s.saveALUA()
}

// setControllerPorts takes a failed controller's ports off the network
// (their connections drop: a dead controller answers nothing) and puts a
// restored one's back, unless a port was taken offline on its own.
func (s *Server) setControllerPorts(controller string, up bool) error {
	s.mu.Lock()
	var ports []uint16
	for _, bp := range s.portals {
		if bp.Controller == controller && bp.Online {
			ports = append(ports, bp.Port)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range ports {
		errs = append(errs, s.setPortOffline(p, !up))
	}
	return errors.Join(errs...)
}

// parseState accepts AO/ANO/S/U/O/T, the full names and the hyphenated
// forms (active-optimized).
func parseState(v string) (scsi.State, error) {
	if st, err := scsi.ParseState(v); err == nil {
		return st, nil
	}
	return scsi.ParseState(strings.ReplaceAll(strings.ToLower(v), "-", "/"))
}

// SetPortOnline takes a port offline (its connections drop, new ones are
// refused) or back online.
func (s *Server) SetPortOnline(port uint16, online bool) error {
	s.mu.Lock()
	var bp *BoundPortal
	for i := range s.portals {
		if s.portals[i].Port == port {
			bp = &s.portals[i]
		}
	}
	if bp == nil {
		s.mu.Unlock()
		return fmt.Errorf("no port %d (ports: %s)", port, s.portList())
	}
	bp.Online = online
	ctrl := bp.Controller
	s.mu.Unlock()
	offline := !online
	if online {
		// A port of a failed controller stays off the network.
		for _, c := range s.arr.Status().Controllers {
			if c.Name == ctrl && !c.Up {
				offline = true
			}
		}
	}
	return s.setPortOffline(port, offline)
}

func (s *Server) portList() string {
	var ids []string
	for _, bp := range s.portals {
		ids = append(ids, fmt.Sprint(bp.Port))
	}
	return strings.Join(ids, ", ")
}

// DropSessions drops every connection of an initiator.
func (s *Server) DropSessions(initiator string) (int, error) {
	if initiator == "" {
		return 0, errors.New("session drop needs an initiator name (`mpathfs array status` lists the sessions)")
	}
	n := s.tr.DropInitiator(initiator)
	if n == 0 {
		return 0, fmt.Errorf("no connection of initiator %s (`mpathfs array status` lists the sessions)", initiator)
	}
	return n, nil
}

// Inject installs a fault and returns it with its id.
func (s *Server) Inject(f Fault) (Fault, error) {
	if err := f.Validate(); err != nil {
		return Fault{}, err
	}
	if f.Port != 0 {
		ok := false
		for _, bp := range s.Portals() {
			ok = ok || bp.Port == f.Port
		}
		if !ok {
			return Fault{}, fmt.Errorf("array fault: no port %d (ports: %s)", f.Port, s.portList())
		}
	}
	for _, l := range f.LUNs {
		ok := false
		for _, lu := range s.cfg.LUs {
			ok = ok || lu.LUN == l
		}
		if !ok {
			return Fault{}, fmt.Errorf("array fault: no LU %d", l)
		}
	}
	a := &armed{Fault: f}
	a.from, a.to, _ = f.lbaRange()
	if !f.drops() {
		id, err := s.units.AddFault(f)
		if err != nil {
			return Fault{}, err
		}
		a.unitID = id
	}
	s.mu.Lock()
	s.nextID++
	a.ID = s.nextID
	s.faults = append(s.faults, a)
	if a.unitID == 0 {
		s.drops.Add(1)
	}
	s.mu.Unlock()
	return a.Fault, nil
}

// Faults lists the faults in force.
func (s *Server) Faults() []Fault {
	live := map[int]bool{}
	for _, id := range s.units.LiveFaults() {
		live[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Fault
	for _, a := range s.faults {
		if (a.unitID != 0 && !live[a.unitID]) || a.expired {
			continue
		}
		out = append(out, a.Fault)
	}
	return out
}

// Clear removes one fault (id > 0) or all (id 0); it returns how many.
func (s *Server) Clear(id int) (int, error) {
	s.mu.Lock()
	var keep, gone []*armed
	for _, a := range s.faults {
		if id == 0 || a.ID == id {
			gone = append(gone, a)
		} else {
			keep = append(keep, a)
		}
	}
	s.faults = keep
	for _, a := range gone {
		if a.unitID == 0 && !a.expired {
			s.drops.Add(-1)
		}
	}
	s.mu.Unlock()
	if id != 0 && len(gone) == 0 {
		return 0, fmt.Errorf("no array fault %d (`mpathfs array fault list` shows them)", id)
	}
	for _, a := range gone {
		if a.unitID != 0 {
			s.units.RemoveFault(a.unitID)
		}
	}
	return len(gone), nil
}

// shouldDrop is the transport's hook: whether a drop fault matches.
func (s *Server) shouldDrop(n scsi.Nexus, cmd *scsi.Command) bool {
	if s.drops.Load() == 0 {
		return false
	}
	cls, lba, blocks, ranged := classify(cmd.CDB)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.faults {
		if a.unitID != 0 || a.expired || !a.matches(n, cmd.LUN, cls, lba, blocks, ranged) {
			continue
		}
		a.fired++
		if a.Count > 0 && a.fired >= a.Count {
			a.expired = true
			s.drops.Add(-1)
		}
		return true
	}
	return false
}

func (a *armed) matches(n scsi.Nexus, lun uint64, cls string, lba, blocks uint64, ranged bool) bool {
	if a.Port != 0 && a.Port != n.TargetPort {
		return false
	}
	if a.Initiator != "" && !strings.EqualFold(a.Initiator, n.Initiator) && !strings.EqualFold(a.Initiator, n.InitiatorPort()) {
		return false
	}
	if len(a.LUNs) > 0 {
		ok := false
		for _, l := range a.LUNs {
			ok = ok || l == lun
		}
		if !ok {
			return false
		}
	}
	ops := a.Ops
	if len(ops) == 0 {
		ops = []string{"read", "write", "flush", "discard"}
	}
	ok := false
	for _, o := range ops {
		ok = ok || o == "any" || o == cls
	}
	if !ok {
		return false
	}
	if a.LBA != "" {
		if !ranged || blocks == 0 {
			return false
		}
		if lba > a.to || lba+blocks-1 < a.from {
			return false
		}
	}
	return true
}

// classify names a command's operation class and its LBA range.
func classify(cdb []byte) (cls string, lba, blocks uint64, ranged bool) {
	if len(cdb) == 0 {
		return "other", 0, 0, false
	}
	be := func(b []byte) uint64 {
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		return v
	}
	rng := func() (uint64, uint64, bool) {
		switch {
		case len(cdb) >= 10 && cdb[0]>>5 == 1: // 10-byte group
			return be(cdb[2:6]), be(cdb[7:9]), true
		case len(cdb) >= 12 && cdb[0]>>5 == 5: // 12-byte
			return be(cdb[2:6]), be(cdb[6:10]), true
		case len(cdb) >= 16 && cdb[0]>>5 == 4: // 16-byte
			return be(cdb[2:10]), be(cdb[10:14]), true
		case len(cdb) >= 6 && cdb[0]>>5 == 0:
			n := uint64(cdb[4])
			if n == 0 {
				n = 256
			}
			return be(cdb[1:4]) & 0x1fffff, n, true
		}
		return 0, 0, false
	}
	switch cdb[0] {
	case 0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f:
		cls = "read"
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x89:
		cls = "write"
	case 0x41, 0x93:
		cls = "write"
		if len(cdb) > 1 && cdb[1]&0x08 != 0 {
			cls = "discard"
		}
	case 0x35, 0x91:
		return "flush", 0, 0, false
	case 0x42:
		return "discard", 0, 0, false
	case 0x00:
		return "probe", 0, 0, false
	default:
		return "other", 0, 0, false
	}
	lba, blocks, ranged = rng()
	return cls, lba, blocks, ranged
}

// Status is what `mpathfs array status` shows of an array server.
type Status struct {
	Name         string        `json:"name"`
	Target       string        `json:"target"`
	Array        array.Status  `json:"array"`
	Portals      []BoundPortal `json:"portals"`
	Sessions     []Session     `json:"sessions"`
	LUs          []LUStatus    `json:"lus"`
	Reservations any           `json:"reservations"`
	Faults       []Fault       `json:"faults"`
	// TaskManagement counts the task management requests answered, by
	// function and response.
	TaskManagement []iscsi.TMFCount `json:"task_management"`
}

// LUStatus is one LU in a Status.
type LUStatus struct {
	LUN  uint64 `json:"lun"`
	Name string `json:"name"`
	File string `json:"file"`
	Size int64  `json:"size"`
	WWID string `json:"wwid,omitempty"`
}

// Status snapshots the server.
func (s *Server) Status() Status {
	st := Status{Name: s.cfg.Name, Target: s.cfg.Target, Array: s.arr.Status(), Portals: s.Portals(),
		Sessions: s.tr.Sessions(), Reservations: s.units.Reservations(), Faults: s.Faults()}
	for i, lu := range s.cfg.LUs {
		st.LUs = append(st.LUs, LUStatus{LUN: lu.LUN, Name: lu.Name, File: lu.File, Size: s.stores[i].Size(), WWID: lu.WWID})
	}
	if st.Sessions == nil {
		st.Sessions = []Session{}
	}
	if st.Faults == nil {
		st.Faults = []Fault{}
	}
	st.TaskManagement = []iscsi.TMFCount{}
	if c, ok := s.tr.(interface{ TaskManagementCounts() []iscsi.TMFCount }); ok {
		st.TaskManagement = c.TaskManagementCounts()
	}
	sort.Slice(st.Portals, func(i, j int) bool { return st.Portals[i].Port < st.Portals[j].Port })
	return st
}

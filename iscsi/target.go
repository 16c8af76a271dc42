package iscsi

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/scsi"
)

// Portal is one network portal of the target: where initiators connect,
// and the SCSI target port it stands for.
type Portal struct {
	// Addr is the address advertised in SendTargets (host:port); empty
	// means the listener's address.
	Addr string
	// TPGT is the iSCSI target portal group tag.
	TPGT uint16
	// RelativePort is the SCSI relative target port identifier and TPG
	// the target port group: they fill the Nexus of every command that
	// arrives through this portal.
	RelativePort uint16
	TPG          uint16
}

// CHAPSecret is what the target knows about one initiator for CHAP.
type CHAPSecret struct {
	// Secret is the initiator's secret (the target checks CHAP_R with it).
	// The name the initiator presents in CHAP_N must equal User (or the
	// initiator name when User is empty).
	User   string
	Secret string
	// TargetUser and TargetSecret, when set, allow mutual CHAP: the
	// target answers the initiator's challenge with them.
	TargetUser   string
	TargetSecret string
}

// Limits bound what the target accepts and offers.
type Limits struct {
	// MaxRecvDataSegmentLength is the largest data segment the target
	// receives (declared at login). Default 262144.
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength, FirstBurstLength and MaxOutstandingR2T are the
	// target's highest acceptable values. Defaults 1 MiB, 256 KiB, 8.
	MaxBurstLength    uint32
	FirstBurstLength  uint32
	MaxOutstandingR2T uint32
	// CmdWindow is the queue depth of a session: MaxCmdSN = ExpCmdSN +
	// CmdWindow - 1 - (commands outstanding). Default 128.
	CmdWindow uint32
	// LoginTimeout bounds the whole login phase of a connection.
	// Default 15s.
	LoginTimeout time.Duration
	// NOPInterval is the idle time after which the target pings the
	// initiator with a NOP-In; a connection whose initiator does not
	// answer within NOPTimeout is dropped. Defaults 20s and 20s; a
	// negative NOPInterval turns pings off.
	NOPInterval time.Duration
	NOPTimeout  time.Duration
	// MaxSessions bounds the sessions at once (default 1024).
	MaxSessions int
}

func (l *Limits) fill() {
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxRecvDataSegmentLength, 262144)
	def(&l.MaxBurstLength, 1<<20)
	def(&l.FirstBurstLength, 262144)
	def(&l.MaxOutstandingR2T, 8)
	def(&l.CmdWindow, 128)
	if l.LoginTimeout == 0 {
		l.LoginTimeout = 15 * time.Second
	}
	if l.NOPInterval == 0 {
		l.NOPInterval = 20 * time.Second
	}
	if l.NOPTimeout == 0 {
		l.NOPTimeout = 20 * time.Second
	}
	if l.MaxSessions == 0 {
		l.MaxSessions = 1024
	}
}

// InterceptFunc sees every command before the logical unit does (the
// array's faults). It may delay the command (the delay ends early when
// the command is aborted), answer it instead of the logical unit (resp
// non-nil), or drop the connection the command came on (drop). It is
// called concurrently.
type InterceptFunc func(n scsi.Nexus, cmd *scsi.Command) (delay time.Duration, resp *scsi.Response, drop bool)

// DropFunc decides, for every command before the logical unit sees it,
// whether to drop the connection the command came on (the array's
// injected path failures). Unlike an InterceptFunc it never delays a
// command. It is called concurrently.
type DropFunc func(n scsi.Nexus, cmd *scsi.Command) (drop bool)

// QuickHandler is an optional capability of a scsi.Handler: Quick reports
// that Execute of cmd will return at memory speed, waiting for no device,
// timer or other command. The target then runs such a command on the
// goroutine that read it off the connection, when it is the only command
// of its session in progress and no InterceptFunc is set, instead of
// handing it to a goroutine of its own: at queue depth 1 that hand-off
// (waking a second thread, and that thread's spinning) cost more than the
// command. The connection reads nothing while the command runs, so a
// command that may wait (and must stay abortable while it waits) must not
// be reported quick. The cmd.DataOut a quick command executes with may be
// the connection's read buffer: it is valid only until Execute returns.
type QuickHandler interface {
	Quick(n scsi.Nexus, cmd *scsi.Command) bool
}

// LUNHaver is an optional capability of a scsi.Handler: HasLUN answers
// whether LUNs(n) holds lun without building the list (the target asks
// before every command).
type LUNHaver interface {
	HasLUN(n scsi.Nexus, lun uint64) bool
}

// TargetConfig configures a Target.
type TargetConfig struct {
	// Name is the target's iSCSI name (iqn.… or eui.…). Required.
	Name string
	// Alias is sent as TargetAlias when set.
	Alias string
	// CHAP holds the CHAP secrets by initiator name. An initiator listed
	// here must authenticate with CHAP; others log in without
	// authentication unless RequireCHAP is set.
	CHAP        map[string]CHAPSecret
	RequireCHAP bool
	// NoDigests refuses CRC32C header and data digests.
	// RequireHeaderDigest and RequireDataDigest refuse a connection
	// without that digest (None is not an acceptable value). By default
	// the target accepts both and takes the initiator's first choice.
	NoDigests           bool
	RequireHeaderDigest bool
	RequireDataDigest   bool
	// Limits bound the sessions; zero fields take their defaults.
	Limits Limits
	// Intercept, when set, sees every command first (see InterceptFunc).
	Intercept InterceptFunc
	// Logf receives one line per notable event (login, logout, protocol
	// error, dropped connection); nil discards them.
	Logf func(format string, args ...any)
}

// TransferLengther is an optional capability of a scsi.Handler: it tells
// the transport how many bytes a command transfers by its CDB (the SCSI
// transfer length in bytes, SPDTL), so the transport can report residual
// overflow and underflow exactly (RFC 7143 11.4.5). ok false means the
// handler does not know; then the transport learns the data-in length
// from the response (an underflow shows, an overflow cannot) and knows
// nothing of data-out. DataInLen stays the initiator's EDTL either way.
type TransferLengther interface {
	TransferLength(n scsi.Nexus, lun uint64, cdb []byte) (bytes int, ok bool)
}

// Target is an iSCSI target serving the logical units of one
// scsi.Handler on any number of portals.
type Target struct {
	cfg TargetConfig
	h   scsi.Handler

	intercept atomic.Pointer[InterceptFunc]
	drop      atomic.Pointer[DropFunc]
	quick     QuickHandler // h, when it has the capability
	tmfs      tmfCounts    // task management requests answered (tmf_count.go)

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]Portal
		conns     map[*conn]struct{}
		sessions  map[sessionKey]*session
		offline   map[uint16]bool // by relative port
		nextTSIH  uint16
	}
	wg sync.WaitGroup
}

// NewTarget returns a target for the logical units behind h. It fails on
// a configuration that names no target or has an unusable limit.
func NewTarget(cfg TargetConfig, h scsi.Handler) (*Target, error) {
	if h == nil {
		return nil, errors.New("iscsi: NewTarget needs a scsi.Handler for its logical units")
	}
	if !validName(cfg.Name) {
		return nil, fmt.Errorf("iscsi: target name %q is not an iSCSI name: use iqn.YYYY-MM.reversed.domain[:id] or eui.16HEX", cfg.Name)
	}
	l := &cfg.Limits
	l.fill()
	if l.MaxRecvDataSegmentLength < 512 || l.MaxRecvDataSegmentLength > MaxDataSegmentLength {
		return nil, fmt.Errorf("iscsi: Limits.MaxRecvDataSegmentLength %d is outside 512..%d", l.MaxRecvDataSegmentLength, MaxDataSegmentLength)
	}
	if l.MaxBurstLength < 512 || l.MaxBurstLength > MaxDataSegmentLength || l.FirstBurstLength < 512 || l.FirstBurstLength > l.MaxBurstLength {
		return nil, fmt.Errorf("iscsi: Limits.MaxBurstLength %d and FirstBurstLength %d must satisfy 512 <= FirstBurstLength <= MaxBurstLength <= %d",
			l.MaxBurstLength, l.FirstBurstLength, MaxDataSegmentLength)
	}
	if l.CmdWindow > 1<<20 {
		return nil, fmt.Errorf("iscsi: Limits.CmdWindow %d is more than %d commands", l.CmdWindow, 1<<20)
	}
	for name, s := range cfg.CHAP {
		if len(s.Secret) < 1 {
			return nil, fmt.Errorf("iscsi: CHAP secret for %s is empty: set a secret (12 to 16 bytes is the usual)", name)
		}
		if (s.TargetUser == "") != (s.TargetSecret == "") {
			return nil, fmt.Errorf("iscsi: mutual CHAP for %s needs both TargetUser and TargetSecret", name)
		}
	}
	t := &Target{cfg: cfg, h: h}
	t.quick, _ = h.(QuickHandler)
	if cfg.Intercept != nil {
		f := cfg.Intercept
		t.intercept.Store(&f)
	}
	t.mu.listeners = map[net.Listener]Portal{}
	t.mu.conns = map[*conn]struct{}{}
	t.mu.sessions = map[sessionKey]*session{}
	t.mu.offline = map[uint16]bool{}
	return t, nil
}

func validName(n string) bool {
	switch {
	case strings.HasPrefix(n, "iqn.") && len(n) > 4 && len(n) <= 223:
		return true
	case strings.HasPrefix(n, "eui.") && len(n) == 20:
		return true
	case strings.HasPrefix(n, "naa.") && (len(n) == 20 || len(n) == 36):
		return true
	}
	return false
}

// Name is the target's iSCSI name.
func (t *Target) Name() string { return t.cfg.Name }

func (t *Target) logf(format string, args ...any) {
	if t.cfg.Logf != nil {
		t.cfg.Logf(format, args...)
	}
}

// SetIntercept replaces the interception hook (nil removes it).
func (t *Target) SetIntercept(f InterceptFunc) {
	if f == nil {
		t.intercept.Store(nil)
		return
	}
	t.intercept.Store(&f)
}

// SetDropHook replaces the connection-drop hook (nil removes it). It runs
// before the interception hook; unlike that one it leaves quick commands
// (QuickHandler) on the fast path.
func (t *Target) SetDropHook(f DropFunc) {
	if f == nil {
		t.drop.Store(nil)
		return
	}
	t.drop.Store(&f)
}

// ErrTargetClosed is returned by Serve once the target is closed.
var ErrTargetClosed = errors.New("iscsi: target closed")

// Serve accepts connections on l for portal p until l fails or the target
// is closed; it closes l when it returns.
func (t *Target) Serve(l net.Listener, p Portal) error {
	if p.Addr == "" {
		p.Addr = l.Addr().String()
	}
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		l.Close()
		return ErrTargetClosed
	}
	t.mu.listeners[l] = p
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.mu.listeners, l)
		t.mu.Unlock()
		l.Close()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			t.mu.Lock()
			closed := t.mu.closed
			t.mu.Unlock()
			if closed {
				return ErrTargetClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		t.mu.Lock()
		if t.mu.closed || t.mu.offline[p.RelativePort] {
			t.mu.Unlock()
			nc.Close()
			continue
		}
		c := newConn(t, nc, p)
		t.mu.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			c.serve()
		}()
	}
}

// Close stops every listener, closes every connection, waits for the
// commands in progress to end (their contexts are cancelled) and for every
// goroutine of the target to return.
func (t *Target) Close() error {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.mu.closed = true
	for l := range t.mu.listeners {
		l.Close()
	}
	for c := range t.mu.conns {
		c.close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// SetPortOffline takes the portals of a relative target port offline
// (existing connections through them are dropped, new ones are closed at
// once) or back online.
func (t *Target) SetPortOffline(relativePort uint16, offline bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.offline[relativePort] = offline
	if !offline {
		delete(t.mu.offline, relativePort)
		return
	}
	for c := range t.mu.conns {
		if c.portal.RelativePort == relativePort {
			c.close()
		}
	}
}

// DropInitiator drops every connection of the initiator named name (on
// every portal) and returns how many it dropped. The sessions end as a
// dropped connection ends them at ErrorRecoveryLevel 0.
func (t *Target) DropInitiator(name string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c := range t.mu.conns {
		// A connection already closed (its session still ending) is not
		// counted again.
		if c.initiatorName() == name && !c.isClosed() {
			c.close()
			n++
		}
	}
	return n
}

// SessionInfo describes one session for status output.
type SessionInfo struct {
	Initiator string
	ISID      string
	TSIH      uint16
	TPGT      uint16
	Portal    string
	Remote    string
	Discovery bool
	Nexus     scsi.Nexus
	Params    Params
	// Tasks is the number of commands in progress.
	Tasks int
}

// Sessions lists the sessions in full feature phase, sorted by initiator
// and ISID.
func (t *Target) Sessions() []SessionInfo {
	t.mu.Lock()
	var ss []*session
	for _, s := range t.mu.sessions {
		ss = append(ss, s)
	}
	t.mu.Unlock()
	out := make([]SessionInfo, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.info())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Initiator != out[j].Initiator {
			return out[i].Initiator < out[j].Initiator
		}
		return out[i].ISID < out[j].ISID
	})
	return out
}

// portals lists the portals being served, for SendTargets.
func (t *Target) portals() []Portal {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ps []Portal
	for _, p := range t.mu.listeners {
		if !t.mu.offline[p.RelativePort] {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].TPGT != ps[j].TPGT {
			return ps[i].TPGT < ps[j].TPGT
		}
		return ps[i].Addr < ps[j].Addr
	})
	return ps
}

func (t *Target) removeConn(c *conn) {
	t.mu.Lock()
	delete(t.mu.conns, c)
	t.mu.Unlock()
}

// allSessions returns the sessions in full feature phase.
func (t *Target) allSessions() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := make([]*session, 0, len(t.mu.sessions))
	for _, s := range t.mu.sessions {
		ss = append(ss, s)
	}
	return ss
}

package iscsi

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
)

// The initiator: login (no authentication, or CHAP with MD5 and optional
// mutual CHAP), operational negotiation, and a session per path. The full
// feature phase (commands, data, R2T, NOP, TMF, logout, reinstatement) is
// in session_client.go.

// InitiatorConfig says how an initiator session logs in to one target
// portal.
type InitiatorConfig struct {
	// Address is the portal, HOST:PORT.
	Address string
	// TargetName is the target's IQN (or eui./naa. name).
	TargetName string
	// InitiatorName is this initiator's IQN.
	InitiatorName string
	// ISID is the initiator session identifier; zero picks a random one
	// (type 3: random qualifier). Re-logins of a session keep it: that is
	// what makes a re-login a session reinstatement.
	ISID [6]byte
	// CHAPUser and CHAPSecret enable CHAP: the target challenges, we answer.
	CHAPUser, CHAPSecret string
	// MutualUser and MutualSecret enable mutual CHAP: we challenge the
	// target too, and it must answer as MutualUser with MutualSecret.
	MutualUser, MutualSecret string
	// HeaderDigest and DataDigest require CRC32C digests; a target that
	// refuses them fails the login.
	HeaderDigest, DataDigest bool
	// MaxRecvDataSegmentLength is the largest data segment we receive
	// (default 262144).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength and FirstBurstLength are our offers (defaults 1 MiB
	// and 256 KiB); the target may lower them.
	MaxBurstLength, FirstBurstLength uint32
	// LoginTimeout bounds the TCP connect and the whole login (default 10s).
	LoginTimeout time.Duration
	// TMFTimeout bounds one task management request and a NOP-Out ping
	// (default 5s).
	TMFTimeout time.Duration
	// Dialer connects to the portal (default net.Dialer). Tests put a
	// freezing proxy or a hostile target behind it.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c *InitiatorConfig) defaults() {
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 262144
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 1 << 20
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = 256 << 10
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 10 * time.Second
	}
	if c.TMFTimeout == 0 {
		c.TMFTimeout = 5 * time.Second
	}
	if c.ISID == ([6]byte{}) {
		var r [3]byte
		_, _ = rand.Read(r[:])
		// type 3 (random): T=11, A=0, B/C random, D qualifier 0
		c.ISID = [6]byte{0xc0, 0, r[0], r[1], r[2], 0}
	}
	if c.Dialer == nil {
		d := &net.Dialer{}
		c.Dialer = d.DialContext
	}
}

// CheckNodeName checks an iSCSI name (RFC 7143 4.2.7): iqn.YYYY-MM.domain…,
// eui. and 16 hex digits, or naa. and 16 or 32 hex digits.
func CheckNodeName(name string) error {
	switch {
	case strings.HasPrefix(name, "iqn."):
		if len(name) < len("iqn.2000-01.x") || name[8] != '-' {
			return fmt.Errorf("%q is not an iqn name: write iqn.YYYY-MM.reversed.domain[:identifier]", name)
		}
		if _, err := strconv.Atoi(name[4:8]); err != nil {
			return fmt.Errorf("%q is not an iqn name: the year %q is not a number", name, name[4:8])
		}
	case strings.HasPrefix(name, "eui."):
		if b, err := hex.DecodeString(name[4:]); err != nil || len(b) != 8 {
			return fmt.Errorf("%q is not an eui name: write eui. and 16 hex digits", name)
		}
	case strings.HasPrefix(name, "naa."):
		if b, err := hex.DecodeString(name[4:]); err != nil || len(b) != 8 && len(b) != 16 {
			return fmt.Errorf("%q is not an naa name: write naa. and 16 or 32 hex digits", name)
		}
	default:
		return fmt.Errorf("%q is not an iSCSI name: it must start with iqn., eui. or naa. (e.g. iqn.2026-01.org.example:disk1)", name)
	}
	if len(name) > 223 {
		return fmt.Errorf("iSCSI name %.40q… is %d bytes, more than 223", name, len(name))
	}
	for _, c := range name {
		if c <= ' ' || c == '/' || c == 0x7f {
			return fmt.Errorf("iSCSI name %q has the character %q, not allowed", name, c)
		}
	}
	return nil
}

// LoginError is a login the target refused (a non-zero status class) or
// that broke the protocol.
type LoginError struct {
	// Status is the target's status-class and status-detail (0 when the
	// login failed for another reason).
	Status uint16
	Msg    string
}

func (e *LoginError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("iSCSI login refused (status 0x%04x, %s): %s", e.Status, loginStatusText(e.Status), e.Msg)
	}
	return "iSCSI login: " + e.Msg
}

func loginStatusText(s uint16) string {
	switch s {
	case LoginAuthFailed:
		return "authentication failed: check chap_user and chap_secret"
	case LoginForbidden:
		return "authorization failure: the target does not allow this initiator name"
	case LoginNotFound:
		return "target not found: check the target name in the URI"
	case LoginTargetRemoved:
		return "target removed"
	case LoginUnsupportedVersion:
		return "unsupported version"
	case LoginTooManyConnections:
		return "too many connections"
	case LoginMissingParameter:
		return "missing parameter"
	case LoginInitiatorError:
		return "initiator error"
	case LoginServiceUnavailable:
		return "service unavailable"
	case LoginOutOfResources:
		return "out of resources"
	}
	switch s >> 8 {
	case 1:
		return "redirection (not followed)"
	case 2:
		return "initiator error"
	case 3:
		return "target error"
	}
	return "unknown status"
}

// loginClass is what a failed login means for the path: a refusal for our
// configuration (class 2: auth, not found, forbidden) is a device error,
// another path would fare no better; anything else is a path failure.
func loginClass(err error) ioerr.Class {
	var le *LoginError
	if errors.As(err, &le) && le.Status>>8 == 2 {
		return ioerr.ClassDeviceError
	}
	return ioerr.ClassPathFailure
}

// login runs the login phase on a fresh connection: security negotiation
// (CHAP or none), operational negotiation, then full feature phase.
func login(ctx context.Context, cfg *InitiatorConfig, nc net.Conn, cc *clientConn) error {
	dl := time.Now().Add(cfg.LoginTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	l := &initLogin{cfg: cfg, cc: cc, itt: 0}
	if err := l.security(); err != nil {
		return err
	}
	if err := l.operational(); err != nil {
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

type initLogin struct {
	cfg  *InitiatorConfig
	cc   *clientConn
	itt  uint32
	tsih uint16
	csg  uint8
	pdu  PDU
}

// exchange sends one login request with keys and returns the target's
// answer (the text of every continued response PDU joined).
func (l *initLogin) exchange(keys Text, transit bool, nsg uint8) (*LoginResponse, Text, error) {
	cc := l.cc
	req := &LoginRequest{Transit: transit, CSG: l.csg, NSG: nsg, ISID: l.cfg.ISID, TSIH: l.tsih,
		ITT: l.itt, CmdSN: cc.cmdSN, ExpStatSN: cc.expStatSN}
	if !transit {
		req.NSG = 0
	}
	l.pdu.Encode(req, keys.Marshal())
	if err := cc.fr.WritePDU(&l.pdu); err != nil {
		return nil, nil, &LoginError{Msg: fmt.Sprintf("sending the login request: %v", err)}
	}
	var data []byte
	for {
		if err := cc.fr.ReadPDU(&l.pdu); err != nil {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("reading the login response: %v", err)}
		}
		if op := l.pdu.BHS.Opcode(); op != OpLoginResp {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("the target answered the login request with %v", op)}
		}
		var resp LoginResponse
		resp.Decode(&l.pdu.BHS)
		if resp.Status != LoginSuccess {
			return nil, nil, &LoginError{Status: resp.Status, Msg: fmt.Sprintf("target %s at %s", l.cfg.TargetName, l.cfg.Address)}
		}
		if resp.ITT != l.itt {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("login response for task tag 0x%x, we sent 0x%x", resp.ITT, l.itt)}
		}
		if resp.ISID != l.cfg.ISID {
			return nil, nil, &LoginError{Msg: "login response for another ISID"}
		}
		if resp.VersionActive != 0 {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("target speaks iSCSI version %d, we speak 0", resp.VersionActive)}
		}
		if len(data)+len(l.pdu.Data) > 64<<10 {
			return nil, nil, &LoginError{Msg: "login response text longer than 64 KiB"}
		}
		data = append(data, l.pdu.Data...)
		cc.expStatSN = resp.StatSN + 1
		cc.updateWindow(resp.ExpCmdSN, resp.MaxCmdSN)
		if resp.Continue {
			// ask for the rest with an empty request
			next := &LoginRequest{CSG: l.csg, ISID: l.cfg.ISID, TSIH: l.tsih, ITT: l.itt, CmdSN: cc.cmdSN, ExpStatSN: cc.expStatSN}
			l.pdu.Encode(next, nil)
			if err := cc.fr.WritePDU(&l.pdu); err != nil {
				return nil, nil, &LoginError{Msg: fmt.Sprintf("sending the login request: %v", err)}
			}
			continue
		}
		if resp.Transit && resp.NSG > nsg {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("target moved to login stage %d, we asked for %d", resp.NSG, nsg)}
		}
		if resp.CSG != l.csg {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("target answered in login stage %d, we are in %d", resp.CSG, l.csg)}
		}
		t, err := ParseText(data)
		if err != nil {
			return nil, nil, &LoginError{Msg: fmt.Sprintf("login response text: %v", err)}
		}
		l.tsih = resp.TSIH
		return &resp, t, nil
	}
}

// security runs the security negotiation stage: AuthMethod None, or CHAP.
func (l *initLogin) security() error {
	cfg := l.cfg
	keys := Text{{"InitiatorName", cfg.InitiatorName}, {"SessionType", "Normal"}, {"TargetName", cfg.TargetName}}
	l.csg = StageSecurity
	if cfg.CHAPUser == "" {
		keys.Add("AuthMethod", "None")
		resp, t, err := l.exchange(keys, true, StageOperational)
		if err != nil {
			return err
		}
		if v, ok := t.Get("AuthMethod"); ok && v != "None" {
			return &LoginError{Msg: fmt.Sprintf("target wants AuthMethod=%s: give chap_user and chap_secret", v)}
		}
		for !resp.Transit {
			if resp, _, err = l.exchange(nil, true, StageOperational); err != nil {
				return err
			}
		}
		l.csg = resp.NSG
		return nil
	}
	keys.Add("AuthMethod", "CHAP")
	_, t, err := l.exchange(keys, false, 0)
	if err != nil {
		return err
	}
	if v, _ := t.Get("AuthMethod"); v != "CHAP" {
		return &LoginError{Msg: fmt.Sprintf("target answered AuthMethod=%q to our CHAP: it does not do CHAP for this target", v)}
	}
	_, t, err = l.exchange(Text{{"CHAP_A", "5"}}, false, 0)
	if err != nil {
		return err
	}
	if v, _ := t.Get("CHAP_A"); v != "5" {
		return &LoginError{Msg: fmt.Sprintf("target chose CHAP_A=%q; we only do 5 (MD5)", v)}
	}
	idS, _ := t.Get("CHAP_I")
	chS, _ := t.Get("CHAP_C")
	id, err := strconv.ParseUint(idS, 0, 8)
	if err != nil {
		return &LoginError{Msg: fmt.Sprintf("target sent CHAP_I=%q, not a number from 0 to 255", idS)}
	}
	challenge, err := decodeCHAPBinary(chS)
	if err != nil || len(challenge) == 0 || len(challenge) > 1024 {
		return &LoginError{Msg: fmt.Sprintf("target sent an unreadable CHAP_C (%v)", err)}
	}
	answer := Text{{"CHAP_N", cfg.CHAPUser}, {"CHAP_R", "0x" + hex.EncodeToString(chapResponse(byte(id), cfg.CHAPSecret, challenge))}}
	var myID byte
	var myChallenge []byte
	if cfg.MutualUser != "" {
		var b [17]byte
		_, _ = rand.Read(b[:])
		myID, myChallenge = b[0], b[1:]
		if string(myChallenge) == string(challenge) {
			return &LoginError{Msg: "target's CHAP challenge equals ours (a reflection attack?)"}
		}
		answer.Add("CHAP_I", strconv.Itoa(int(myID)))
		answer.Add("CHAP_C", "0x"+hex.EncodeToString(myChallenge))
	}
	resp, t, err := l.exchange(answer, true, StageOperational)
	if err != nil {
		return err
	}
	if cfg.MutualUser != "" {
		n, _ := t.Get("CHAP_N")
		r, _ := t.Get("CHAP_R")
		got, err := decodeCHAPBinary(r)
		if err != nil {
			return &LoginError{Msg: "mutual CHAP: the target sent no readable CHAP_R: is mutual CHAP set up on the target?"}
		}
		want := chapResponse(myID, cfg.MutualSecret, myChallenge)
		if n != cfg.MutualUser || subtle.ConstantTimeCompare(got, want) != 1 {
			return &LoginError{Msg: fmt.Sprintf("mutual CHAP: the target answered as %q with a wrong response: check mutual_user and mutual_secret", n)}
		}
	}
	for !resp.Transit {
		if resp, _, err = l.exchange(nil, true, StageOperational); err != nil {
			return err
		}
	}
	l.csg = resp.NSG
	return nil
}

// chapResponse is MD5(id || secret || challenge) (RFC 1994).
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// decodeCHAPBinary reads a CHAP binary value: 0x + hex or 0b + base64.
func decodeCHAPBinary(s string) ([]byte, error) {
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		return hex.DecodeString(h)
	}
	return nil, fmt.Errorf("%q is not a 0x-prefixed hex value", s)
}

// operational negotiates the session's parameters and enters the full
// feature phase.
func (l *initLogin) operational() error {
	cfg := l.cfg
	digest := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	offer := Text{
		{"HeaderDigest", digest(cfg.HeaderDigest)},
		{"DataDigest", digest(cfg.DataDigest)},
		{"MaxRecvDataSegmentLength", strconv.Itoa(int(cfg.MaxRecvDataSegmentLength))},
		{"InitialR2T", "No"},
		{"ImmediateData", "Yes"},
		{"MaxBurstLength", strconv.Itoa(int(cfg.MaxBurstLength))},
		{"FirstBurstLength", strconv.Itoa(int(cfg.FirstBurstLength))},
		{"MaxOutstandingR2T", "1"},
		{"MaxConnections", "1"},
		{"DataPDUInOrder", "Yes"},
		{"DataSequenceInOrder", "Yes"},
		{"ErrorRecoveryLevel", "0"},
		{"DefaultTime2Wait", "0"},
		{"DefaultTime2Retain", "0"},
	}
	p := DefaultParams()
	p.MaxRecvDataSegmentLength = cfg.MaxRecvDataSegmentLength
	if l.csg == StageFullFeature {
		return &LoginError{Msg: "target skipped operational negotiation: cannot agree on digests and limits"}
	}
	l.csg = StageOperational
	keys := offer
	answered := map[string]bool{}
	for round := 0; ; round++ {
		if round > 8 {
			return &LoginError{Msg: "operational negotiation did not end after 8 rounds"}
		}
		resp, t, err := l.exchange(keys, true, StageFullFeature)
		if err != nil {
			return err
		}
		keys = nil
		var neg *Negotiator
		for _, kv := range t {
			if off, ok := offer.Get(kv.Key); ok && !answered[kv.Key] && kv.Key != "MaxRecvDataSegmentLength" {
				answered[kv.Key] = true
				v, err := Outcome(kv.Key, off, kv.Value)
				if (kv.Key == "HeaderDigest" || kv.Key == "DataDigest") && off == "CRC32C" && kv.Value == "None" {
					return &LoginError{Msg: fmt.Sprintf("target answered %s=None to our CRC32C: it does not do digests for this target; drop %s=crc32c from the URI or enable them on the target", kv.Key, digestParam(kv.Key))}
				}
				if err != nil {
					return &LoginError{Msg: err.Error()}
				}
				if v == ValueReject || v == ValueNotUnderstood || v == ValueIrrelevant {
					if kv.Key == "HeaderDigest" && cfg.HeaderDigest || kv.Key == "DataDigest" && cfg.DataDigest {
						return &LoginError{Msg: fmt.Sprintf("target answered %s=%s: it does not do CRC32C digests; drop %s=crc32c from the URI", kv.Key, v, digestParam(kv.Key))}
					}
					continue
				}
				if err := applyKey(&p, kv.Key, v); err != nil {
					return &LoginError{Msg: err.Error()}
				}
				continue
			}
			switch kv.Key {
			case "MaxRecvDataSegmentLength":
				n, err := ParseNumber(kv.Value)
				if err != nil || n < 512 || n > MaxDataSegmentLength {
					return &LoginError{Msg: fmt.Sprintf("target declared MaxRecvDataSegmentLength=%q", kv.Value)}
				}
				p.PeerMaxRecvDataSegmentLength = n
			case "TargetPortalGroupTag", "TargetAlias", "TargetAddress", "TargetName":
			default:
				// a key the target offers: answer it as a responder would
				if neg == nil {
					neg = NewNegotiator(p)
				}
				v, err := neg.Answer(kv.Key, kv.Value)
				if err != nil {
					return &LoginError{Msg: err.Error()}
				}
				keys.Add(kv.Key, v)
				if v != ValueNotUnderstood && v != ValueReject && v != ValueIrrelevant {
					_ = applyKey(&p, kv.Key, v)
				}
			}
		}
		if resp.Transit && resp.NSG == StageFullFeature && len(keys) == 0 {
			break
		}
	}
	if cfg.HeaderDigest && !p.HeaderDigest || cfg.DataDigest && !p.DataDigest {
		return &LoginError{Msg: "target did not agree to CRC32C digests"}
	}
	if p.FirstBurstLength > p.MaxBurstLength {
		p.FirstBurstLength = p.MaxBurstLength
	}
	l.cc.params = p
	l.cc.tsih = l.tsih
	l.cc.fr.HeaderDigest, l.cc.fr.DataDigest = p.HeaderDigest, p.DataDigest
	l.cc.fr.MaxRecvDataSegmentLength = int(p.MaxRecvDataSegmentLength)
	return nil
}

// applyKey records one negotiated value in p.
func applyKey(p *Params, key, v string) error {
	num := func(dst *uint32) error {
		n, err := ParseNumber(v)
		if err != nil {
			return fmt.Errorf("%s=%s: %v", key, v, err)
		}
		*dst = n
		return nil
	}
	boolean := func(dst *bool) error {
		b, err := ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s=%s: %v", key, v, err)
		}
		*dst = b
		return nil
	}
	switch key {
	case "HeaderDigest":
		p.HeaderDigest = v == "CRC32C"
	case "DataDigest":
		p.DataDigest = v == "CRC32C"
	case "InitialR2T":
		return boolean(&p.InitialR2T)
	case "ImmediateData":
		return boolean(&p.ImmediateData)
	case "DataPDUInOrder":
		return boolean(&p.DataPDUInOrder)
	case "DataSequenceInOrder":
		return boolean(&p.DataSequenceInOrder)
	case "MaxBurstLength":
		return num(&p.MaxBurstLength)
	case "FirstBurstLength":
		return num(&p.FirstBurstLength)
	case "MaxOutstandingR2T":
		return num(&p.MaxOutstandingR2T)
	case "MaxConnections":
		return num(&p.MaxConnections)
	case "ErrorRecoveryLevel":
		return num(&p.ErrorRecoveryLevel)
	case "DefaultTime2Wait":
		return num(&p.DefaultTime2Wait)
	case "DefaultTime2Retain":
		return num(&p.DefaultTime2Retain)
	}
	return nil
}

// digestParam names the URI parameter of a digest key.
func digestParam(key string) string {
	if key == "HeaderDigest" {
		return "header_digest"
	}
	return "data_digest"
}

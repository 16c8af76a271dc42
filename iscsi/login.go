package iscsi

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// loginError ends a login with a Login Response of Status.
type loginError struct {
	status uint16
	msg    string
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login failed (status 0x%04x): %s", e.status, e.msg)
}

func loginFail(status uint16, format string, args ...any) error {
	return &loginError{status: status, msg: fmt.Sprintf(format, args...)}
}

// loginState is the target's side of one connection's login phase.
type loginState struct {
	c     *conn
	first bool
	csg   uint8
	isid  [6]byte
	tsih  uint16
	itt   uint32
	cid   uint16

	initiator   string
	discovery   bool
	sentTPGT    bool
	targetNamed bool
	sentMRDSL   bool

	authMethod string // "", "None", "CHAP"
	authDone   bool
	chapSent   bool
	chapID     byte
	chapChal   []byte
	secret     CHAPSecret

	neg    *Negotiator
	params Params

	pending []byte // data of Login Requests with the C bit
}

// login runs the login phase: it returns once the final Login Response
// has been sent and the session is registered, or with an error after a
// failure response (or none, when the stream broke).
func (c *conn) login() error {
	t := c.t
	l := &t.cfg.Limits
	prefs := DefaultParams()
	prefs.HeaderDigest = !t.cfg.NoDigests
	prefs.DataDigest = !t.cfg.NoDigests
	prefs.InitialR2T = false
	prefs.ImmediateData = true
	prefs.MaxRecvDataSegmentLength = l.MaxRecvDataSegmentLength
	prefs.MaxBurstLength = l.MaxBurstLength
	prefs.FirstBurstLength = l.FirstBurstLength
	prefs.MaxOutstandingR2T = l.MaxOutstandingR2T
	prefs.DefaultTime2Wait = 0
	prefs.DefaultTime2Retain = 0
	ls := &loginState{c: c, first: true, neg: NewNegotiator(prefs)}
	ls.neg.RequireHeaderDigest = t.cfg.RequireHeaderDigest && !t.cfg.NoDigests
	ls.neg.RequireDataDigest = t.cfg.RequireDataDigest && !t.cfg.NoDigests
	// During login the data segment of a Login Request may be as long as
	// the default 8192; accept ours.
	c.fr.MaxRecvDataSegmentLength = int(l.MaxRecvDataSegmentLength)
	var p PDU
	for {
		if err := c.fr.ReadPDU(&p); err != nil {
			return fmt.Errorf("reading a Login Request: %w", err)
		}
		if p.BHS.Opcode() != OpLoginReq {
			// RFC 7143 6.?: anything but a Login Request during login is a
			// protocol error; answer with a login failure.
			c.loginReject(ls, LoginInvalidRequest)
			return fmt.Errorf("%v during login", p.BHS.Opcode())
		}
		var req LoginRequest
		req.Decode(&p.BHS)
		done, err := ls.step(&req, p.Data)
		if err != nil {
			var le *loginError
			if errors.As(err, &le) {
				c.loginReject(ls, le.status)
			}
			return err
		}
		if done {
			return nil
		}
	}
}

func (c *conn) loginReject(ls *loginState, status uint16) {
	resp := &LoginResponse{ISID: ls.isid, TSIH: ls.tsih, ITT: ls.itt, Status: status, CSG: ls.csg, NSG: ls.csg}
	resp.StatSN = c.statSN
	resp.ExpCmdSN = c.expCmdSN.Load()
	resp.MaxCmdSN = resp.ExpCmdSN + c.window() - 1
	var p PDU
	p.Encode(resp, nil)
	_ = c.fr.WritePDU(&p)
}

// step handles one Login Request. It reports done after the final
// response of a successful login.
func (ls *loginState) step(req *LoginRequest, data []byte) (bool, error) {
	c := ls.c
	t := c.t
	if ls.first {
		ls.first = false
		ls.isid, ls.tsih, ls.itt, ls.cid = req.ISID, req.TSIH, req.ITT, req.CID
		ls.csg = req.CSG
		c.expCmdSN.Store(req.CmdSN)
		c.statSN = 1
		if req.VersionMin > 0 || req.VersionMax < req.VersionMin {
			return false, loginFail(LoginUnsupportedVersion, "versions %d..%d offered, this target speaks version 0", req.VersionMin, req.VersionMax)
		}
	} else if req.ISID != ls.isid || req.TSIH != ls.tsih || req.CID != ls.cid {
		return false, loginFail(LoginInitiatorError, "ISID, TSIH or CID changed during the login")
	}
	ls.itt = req.ITT
	if req.CSG == 2 || req.Transit && (req.NSG == 2 || req.NSG <= req.CSG) {
		return false, loginFail(LoginInitiatorError, "stage transition %d -> %d is not allowed", req.CSG, req.NSG)
	}
	if req.CSG != ls.csg {
		if !(ls.csg == StageSecurity && req.CSG == StageOperational && ls.authDone) {
			return false, loginFail(LoginInitiatorError, "login request in stage %d while the login is in stage %d", req.CSG, ls.csg)
		}
		ls.csg = req.CSG
	}
	if req.Continue {
		if len(ls.pending)+len(data) > 64*1024 {
			return false, loginFail(LoginInitiatorError, "login text longer than 64 KiB")
		}
		ls.pending = append(ls.pending, data...)
		return false, ls.reply(req, nil, false, 0)
	}
	all := data
	if len(ls.pending) > 0 {
		all = append(ls.pending, data...)
		ls.pending = nil
	}
	kv, err := ParseText(all)
	if err != nil {
		return false, loginFail(LoginInitiatorError, "%v", err)
	}
	var out Text
	if err := ls.declaratives(kv, &out); err != nil {
		return false, err
	}
	if ls.csg == StageSecurity {
		if err := ls.security(kv, &out); err != nil {
			return false, err
		}
	} else if ls.authRequired() && !ls.authDone {
		return false, loginFail(LoginAuthFailed, "initiator %s must authenticate with CHAP (it skipped the security stage)", ls.initiator)
	}
	if err := ls.operational(kv, &out); err != nil {
		return false, err
	}
	transit := req.Transit
	if ls.csg == StageSecurity && !ls.authDone {
		transit = false
	}
	nsg := uint8(0)
	if transit {
		nsg = req.NSG
		if nsg == StageFullFeature && !ls.sentMRDSL && !ls.discovery {
			out.Add("MaxRecvDataSegmentLength", fmt.Sprint(t.cfg.Limits.MaxRecvDataSegmentLength))
			ls.sentMRDSL = true
		}
	}
	if transit && nsg == StageFullFeature {
		ls.params = ls.neg.Finish()
		if ls.discovery {
			// The limits of a discovery session are not negotiated
			// beyond these.
			ls.params.InitialR2T, ls.params.ImmediateData = true, false
		}
		if err := c.startSession(ls); err != nil {
			return false, err
		}
		if err := ls.reply(req, out, true, nsg); err != nil {
			return false, err
		}
		// The digests start with the first PDU after the final Login
		// Response (RFC 7143 13.1).
		p := &c.sess.params
		c.fr.HeaderDigest, c.fr.DataDigest = p.HeaderDigest, p.DataDigest
		c.fr.MaxRecvDataSegmentLength = int(p.MaxRecvDataSegmentLength)
		return true, nil
	}
	if transit {
		ls.csg = nsg
	}
	return false, ls.reply(req, out, transit, nsg)
}

func (ls *loginState) reply(req *LoginRequest, out Text, transit bool, nsg uint8) error {
	c := ls.c
	resp := &LoginResponse{Transit: transit, CSG: req.CSG, NSG: nsg, ISID: ls.isid, TSIH: ls.tsih, ITT: req.ITT,
		StatSN: c.statSN, ExpCmdSN: c.expCmdSN.Load()}
	if !transit {
		resp.NSG = 0
	}
	resp.MaxCmdSN = resp.ExpCmdSN + c.window() - 1
	c.statSN++
	data := out.Marshal()
	var p PDU
	p.Encode(resp, data)
	if len(data) > 8192 {
		return fmt.Errorf("login response text of %d bytes is too long", len(data))
	}
	return c.fr.WritePDU(&p)
}

// declaratives handles the names and the session type.
func (ls *loginState) declaratives(kv Text, out *Text) error {
	c := ls.c
	t := c.t
	if v, ok := kv.Get("InitiatorName"); ok {
		if ls.initiator != "" && v != ls.initiator {
			return loginFail(LoginInitiatorError, "InitiatorName changed during the login")
		}
		ls.initiator = v
	}
	if v, ok := kv.Get("SessionType"); ok {
		switch v {
		case "Discovery":
			ls.discovery = true
			ls.neg.Discovery = true
		case "Normal":
		default:
			return loginFail(LoginUnsupportedSession, "SessionType=%s: only Normal and Discovery exist", v)
		}
	}
	if ls.initiator == "" {
		return loginFail(LoginMissingParameter, "the first Login Request must carry InitiatorName")
	}
	if v, ok := kv.Get("TargetName"); ok {
		if ls.discovery {
			// A discovery session may name the target; nothing to check.
		} else if v != t.cfg.Name {
			return loginFail(LoginNotFound, "target %s is not served here (this is %s)", v, t.cfg.Name)
		}
		ls.targetNamed = true
	}
	if !ls.discovery && !ls.targetNamed {
		return loginFail(LoginMissingParameter, "a normal session's first Login Request must carry TargetName")
	}
	if !ls.discovery && !ls.sentTPGT {
		out.Add("TargetPortalGroupTag", fmt.Sprint(c.portal.TPGT))
		if t.cfg.Alias != "" {
			out.Add("TargetAlias", t.cfg.Alias)
		}
		ls.sentTPGT = true
	}
	return nil
}

func (ls *loginState) authRequired() bool {
	t := ls.c.t
	_, listed := t.cfg.CHAP[ls.initiator]
	return t.cfg.RequireCHAP || listed
}

// security handles AuthMethod and the CHAP exchange.
func (ls *loginState) security(kv Text, out *Text) error {
	t := ls.c.t
	if v, ok := kv.Get("AuthMethod"); ok && ls.authMethod == "" {
		offered := strings.Split(v, ",")
		secret, have := t.cfg.CHAP[ls.initiator]
		switch {
		case ls.authRequired() && have && slices.Contains(offered, "CHAP"):
			ls.authMethod, ls.secret = "CHAP", secret
		case ls.authRequired():
			out.Add("AuthMethod", ValueReject)
			return loginFail(LoginAuthFailed, "initiator %s must authenticate with CHAP (offered AuthMethod=%s)", ls.initiator, v)
		default:
			for _, m := range offered {
				if m == "None" {
					ls.authMethod = "None"
					break
				}
				if m == "CHAP" && have {
					ls.authMethod, ls.secret = "CHAP", secret
					break
				}
			}
		}
		if ls.authMethod == "" {
			out.Add("AuthMethod", ValueReject)
			return loginFail(LoginAuthFailed, "no authentication method in common (offered AuthMethod=%s)", v)
		}
		out.Add("AuthMethod", ls.authMethod)
		if ls.authMethod == "None" {
			ls.authDone = true
		}
		return nil
	}
	if ls.authMethod == "" {
		if ls.authRequired() {
			return loginFail(LoginAuthFailed, "initiator %s must authenticate with CHAP and offered no AuthMethod", ls.initiator)
		}
		ls.authMethod, ls.authDone = "None", true
		return nil
	}
	if ls.authMethod != "CHAP" || ls.authDone {
		return nil
	}
	if a, ok := kv.Get("CHAP_A"); ok && !ls.chapSent {
		if !slices.Contains(strings.Split(a, ","), CHAPAlgorithmMD5) {
			out.Add("CHAP_A", ValueReject)
			return loginFail(LoginAuthFailed, "CHAP_A=%s: this target offers MD5 (5) only", a)
		}
		ls.chapID, ls.chapChal = newChallenge()
		out.Add("CHAP_A", CHAPAlgorithmMD5)
		out.Add("CHAP_I", fmt.Sprint(ls.chapID))
		out.Add("CHAP_C", EncodeCHAPBinary(ls.chapChal))
		ls.chapSent = true
		return nil
	}
	if !ls.chapSent {
		return loginFail(LoginAuthFailed, "CHAP chosen but the initiator sent no CHAP_A")
	}
	name, okN := kv.Get("CHAP_N")
	r, okR := kv.Get("CHAP_R")
	if !okN || !okR {
		return loginFail(LoginAuthFailed, "CHAP: expected CHAP_N and CHAP_R")
	}
	wantUser := ls.secret.User
	if wantUser == "" {
		wantUser = ls.initiator
	}
	resp, err := DecodeCHAPBinary(r)
	if err != nil || name != wantUser || !chapVerify(ls.chapID, ls.secret.Secret, ls.chapChal, resp) {
		return loginFail(LoginAuthFailed, "CHAP authentication of %s (CHAP_N=%s) failed", ls.initiator, name)
	}
	// Mutual CHAP: the initiator challenges the target.
	if ci, ok := kv.Get("CHAP_I"); ok {
		cc, okC := kv.Get("CHAP_C")
		if !okC || ls.secret.TargetSecret == "" {
			return loginFail(LoginAuthFailed, "mutual CHAP requested by %s but no target secret is configured for it", ls.initiator)
		}
		id, err := ParseNumber(ci)
		chal, err2 := DecodeCHAPBinary(cc)
		if err != nil || id > 255 || err2 != nil || len(chal) == 0 || len(chal) > 1024 {
			return loginFail(LoginAuthFailed, "mutual CHAP: bad CHAP_I or CHAP_C")
		}
		if string(chal) == string(ls.chapChal) {
			return loginFail(LoginAuthFailed, "mutual CHAP: the initiator replayed the target's challenge")
		}
		out.Add("CHAP_N", ls.secret.TargetUser)
		out.Add("CHAP_R", EncodeCHAPBinary(CHAPResponse(byte(id), ls.secret.TargetSecret, chal)))
	}
	ls.authDone = true
	return nil
}

// operational answers the operational keys (any key not handled above).
func (ls *loginState) operational(kv Text, out *Text) error {
	for _, p := range kv {
		switch p.Key {
		case "InitiatorName", "TargetName", "SessionType", "InitiatorAlias", "AuthMethod":
			continue
		case "TargetAlias", "TargetPortalGroupTag", "TargetAddress":
			// Keys only a target sends.
			return loginFail(LoginInitiatorError, "%s is sent by targets, not initiators", p.Key)
		}
		if strings.HasPrefix(p.Key, "CHAP_") {
			if ls.csg != StageSecurity {
				return loginFail(LoginInitiatorError, "%s outside the security stage", p.Key)
			}
			continue
		}
		ans, err := ls.neg.Answer(p.Key, p.Value)
		if err != nil {
			var ne *NegotiationError
			if errors.As(err, &ne) {
				return loginFail(ne.Status, "%s", ne.Msg)
			}
			// a declarative key the negotiator does not answer
			continue
		}
		if p.Key == "MaxRecvDataSegmentLength" {
			ls.sentMRDSL = true
		}
		out.Add(p.Key, ans)
	}
	return nil
}

// loginDeadline is the absolute deadline of a login started now.
func (c *conn) loginDeadline() time.Time { return time.Now().Add(c.t.cfg.Limits.LoginTimeout) }

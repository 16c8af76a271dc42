package iscsi

import (
	"fmt"
	"strings"
)

// Params are the operational parameters of a session and its connection,
// as login negotiated them (or their RFC 7143 defaults).
type Params struct {
	HeaderDigest   bool
	DataDigest     bool
	MaxConnections uint32
	InitialR2T     bool
	ImmediateData  bool
	// MaxRecvDataSegmentLength is the largest data segment this side
	// receives (it declared it).
	MaxRecvDataSegmentLength uint32
	// PeerMaxRecvDataSegmentLength is the largest data segment the peer
	// receives: the limit on what this side sends.
	PeerMaxRecvDataSegmentLength uint32
	MaxBurstLength               uint32
	FirstBurstLength             uint32
	DefaultTime2Wait             uint32
	DefaultTime2Retain           uint32
	MaxOutstandingR2T            uint32
	DataPDUInOrder               bool
	DataSequenceInOrder          bool
	ErrorRecoveryLevel           uint32
}

// DefaultParams are the values RFC 7143 prescribes when a key is not
// negotiated.
func DefaultParams() Params {
	return Params{
		MaxConnections:               1,
		InitialR2T:                   true,
		ImmediateData:                true,
		MaxRecvDataSegmentLength:     8192,
		PeerMaxRecvDataSegmentLength: 8192,
		MaxBurstLength:               262144,
		FirstBurstLength:             65536,
		DefaultTime2Wait:             2,
		DefaultTime2Retain:           20,
		MaxOutstandingR2T:            1,
		DataPDUInOrder:               true,
		DataSequenceInOrder:          true,
		ErrorRecoveryLevel:           0,
	}
}

// keyRule is how a key's outcome is computed (RFC 7143 6.2).
type keyRule uint8

const (
	ruleList        keyRule = iota // the responder picks the first offered value it supports
	ruleMin                        // numerical, the lower of both
	ruleMax                        // numerical, the higher of both
	ruleOr                         // boolean, Yes if either says Yes
	ruleAnd                        // boolean, Yes if both say Yes
	ruleDeclarative                // each side states its own value
)

// keyUse says in which login stage a key may appear.
type keyUse uint8

const (
	useOperational keyUse = 1 << iota
	useSecurity
	useFullFeature // may also be renegotiated in Text (not at this target)
	useAnyStage    = useOperational | useSecurity
)

type keyDef struct {
	rule   keyRule
	lo, hi uint32
	use    keyUse
	// leadingOnly keys belong to the session and are negotiated on its
	// first connection only.
	leadingOnly bool
}

// keyDefs are the keys of RFC 7143 13 this package negotiates.
var keyDefs = map[string]keyDef{
	"HeaderDigest":             {rule: ruleList, use: useOperational},
	"DataDigest":               {rule: ruleList, use: useOperational},
	"MaxConnections":           {rule: ruleMin, lo: 1, hi: 65535, use: useOperational, leadingOnly: true},
	"InitialR2T":               {rule: ruleOr, use: useOperational, leadingOnly: true},
	"ImmediateData":            {rule: ruleAnd, use: useOperational, leadingOnly: true},
	"MaxRecvDataSegmentLength": {rule: ruleDeclarative, lo: 512, hi: MaxDataSegmentLength, use: useOperational},
	"MaxBurstLength":           {rule: ruleMin, lo: 512, hi: MaxDataSegmentLength, use: useOperational, leadingOnly: true},
	"FirstBurstLength":         {rule: ruleMin, lo: 512, hi: MaxDataSegmentLength, use: useOperational, leadingOnly: true},
	"DefaultTime2Wait":         {rule: ruleMax, lo: 0, hi: 3600, use: useOperational, leadingOnly: true},
	"DefaultTime2Retain":       {rule: ruleMin, lo: 0, hi: 3600, use: useOperational, leadingOnly: true},
	"MaxOutstandingR2T":        {rule: ruleMin, lo: 1, hi: 65535, use: useOperational, leadingOnly: true},
	"DataPDUInOrder":           {rule: ruleOr, use: useOperational, leadingOnly: true},
	"DataSequenceInOrder":      {rule: ruleOr, use: useOperational, leadingOnly: true},
	"ErrorRecoveryLevel":       {rule: ruleMin, lo: 0, hi: 2, use: useOperational, leadingOnly: true},
	"SessionType":              {rule: ruleDeclarative, use: useAnyStage, leadingOnly: true},
	"InitiatorName":            {rule: ruleDeclarative, use: useAnyStage},
	"TargetName":               {rule: ruleDeclarative, use: useAnyStage},
	"InitiatorAlias":           {rule: ruleDeclarative, use: useAnyStage},
	"TargetAlias":              {rule: ruleDeclarative, use: useAnyStage},
	"TargetPortalGroupTag":     {rule: ruleDeclarative, lo: 0, hi: 65535, use: useAnyStage},
	"AuthMethod":               {rule: ruleList, use: useSecurity},
}

// NegotiationError is an offer that cannot be answered with a value: the
// login fails with Status (an initiator error class) and the message names
// the key and what was wrong.
type NegotiationError struct {
	Status uint16
	Msg    string
}

func (e *NegotiationError) Error() string { return "iscsi: login negotiation: " + e.Msg }

// Negotiator is the responder side of operational negotiation: it answers
// the keys an initiator offers with this side's preferences and keeps the
// outcome in Params. The target uses it; an initiator checks answers with
// the same rules (Outcome).
type Negotiator struct {
	// Prefs are this side's values: the highest (min rule) or lowest (max
	// rule) it accepts, its boolean preference, its own
	// MaxRecvDataSegmentLength; HeaderDigest/DataDigest true means CRC32C
	// is supported.
	Prefs Params
	// Params is the outcome so far, starting from DefaultParams.
	Params Params
	// Discovery makes the session-wide operational keys irrelevant.
	Discovery bool
	// RequireHeaderDigest and RequireDataDigest make None unacceptable
	// for that key: the responder picks CRC32C, and an offer without it
	// fails the login.
	RequireHeaderDigest bool
	RequireDataDigest   bool
	seen                map[string]bool
}

// NewNegotiator returns a responder with prefs as its preferences.
func NewNegotiator(prefs Params) *Negotiator {
	return &Negotiator{Prefs: prefs, Params: DefaultParams(), seen: map[string]bool{}}
}

// Answer returns the reply to one offered operational key, records the
// outcome in n.Params, or fails with a NegotiationError for an offer that
// ends the login. Keys this package does not know are answered
// NotUnderstood; obsolete marker keys as RFC 7143 13.25 says.
func (n *Negotiator) Answer(key, value string) (string, error) {
	if n.seen == nil {
		n.seen = map[string]bool{}
	}
	switch key {
	case "OFMarker", "IFMarker":
		return "No", nil
	case "OFMarkInt", "IFMarkInt":
		return ValueReject, nil
	}
	def, ok := keyDefs[key]
	if !ok {
		return ValueNotUnderstood, nil
	}
	if n.seen[key] {
		return "", &NegotiationError{Status: LoginInitiatorError, Msg: fmt.Sprintf("key %s offered twice in one negotiation", key)}
	}
	n.seen[key] = true
	if value == ValueNotUnderstood || value == ValueIrrelevant || value == ValueReject {
		return "", &NegotiationError{Status: LoginInitiatorError, Msg: fmt.Sprintf("key %s offered with the answer-only value %s", key, value)}
	}
	if def.use&useOperational == 0 || def.rule == ruleDeclarative && key != "MaxRecvDataSegmentLength" {
		return "", fmt.Errorf("iscsi: key %s is not an operational key the negotiator answers", key)
	}
	if n.Discovery && def.leadingOnly && key != "ErrorRecoveryLevel" && key != "DefaultTime2Wait" && key != "DefaultTime2Retain" {
		return ValueIrrelevant, nil
	}
	switch def.rule {
	case ruleList:
		return n.answerDigest(key, value)
	case ruleMin, ruleMax, ruleDeclarative:
		v, err := ParseNumber(value)
		if err != nil || v < def.lo || v > def.hi {
			return ValueReject, nil
		}
		return n.answerNumber(key, def.rule, v), nil
	case ruleOr, ruleAnd:
		v, err := ParseBool(value)
		if err != nil {
			return ValueReject, nil
		}
		return n.answerBool(key, def.rule, v), nil
	}
	return ValueNotUnderstood, nil
}

func (n *Negotiator) answerDigest(key, value string) (string, error) {
	supportCRC, required := n.Prefs.HeaderDigest, n.RequireHeaderDigest
	if key == "DataDigest" {
		supportCRC, required = n.Prefs.DataDigest, n.RequireDataDigest
	}
	for _, v := range strings.Split(value, ",") {
		switch {
		case v == "None" && !required:
			n.setDigest(key, false)
			return "None", nil
		case v == "CRC32C" && supportCRC:
			n.setDigest(key, true)
			return "CRC32C", nil
		}
	}
	if required && supportCRC {
		return "", &NegotiationError{Status: LoginInitiatorError,
			Msg: fmt.Sprintf("%s=%s: this target requires CRC32C digests", key, value)}
	}
	// No value in common: RFC 7143 6.2 answers Reject (and the outcome is
	// the default, None).
	n.setDigest(key, false)
	return ValueReject, nil
}

func (n *Negotiator) setDigest(key string, on bool) {
	if key == "HeaderDigest" {
		n.Params.HeaderDigest = on
	} else {
		n.Params.DataDigest = on
	}
}

func (n *Negotiator) answerNumber(key string, rule keyRule, offered uint32) string {
	p, o := &n.Prefs, &n.Params
	pick := func(ours uint32) uint32 {
		if rule == ruleMin {
			return min(ours, offered)
		}
		return max(ours, offered)
	}
	var out uint32
	switch key {
	case "MaxConnections":
		out = pick(p.MaxConnections)
		o.MaxConnections = out
	case "MaxRecvDataSegmentLength":
		// Declarative: the initiator's receive limit is our send limit;
		// we answer with our own receive limit.
		o.PeerMaxRecvDataSegmentLength = offered
		o.MaxRecvDataSegmentLength = p.MaxRecvDataSegmentLength
		return fmt.Sprint(p.MaxRecvDataSegmentLength)
	case "MaxBurstLength":
		out = pick(p.MaxBurstLength)
		o.MaxBurstLength = out
	case "FirstBurstLength":
		out = pick(p.FirstBurstLength)
		o.FirstBurstLength = out
	case "DefaultTime2Wait":
		out = pick(p.DefaultTime2Wait)
		o.DefaultTime2Wait = out
	case "DefaultTime2Retain":
		out = pick(p.DefaultTime2Retain)
		o.DefaultTime2Retain = out
	case "MaxOutstandingR2T":
		out = pick(p.MaxOutstandingR2T)
		o.MaxOutstandingR2T = out
	case "ErrorRecoveryLevel":
		out = pick(p.ErrorRecoveryLevel)
		o.ErrorRecoveryLevel = out
	}
	return fmt.Sprint(out)
}

func (n *Negotiator) answerBool(key string, rule keyRule, offered bool) string {
	p, o := &n.Prefs, &n.Params
	pick := func(ours bool) bool {
		if rule == ruleOr {
			return ours || offered
		}
		return ours && offered
	}
	var out bool
	switch key {
	case "InitialR2T":
		out = pick(p.InitialR2T)
		o.InitialR2T = out
	case "ImmediateData":
		out = pick(p.ImmediateData)
		o.ImmediateData = out
	case "DataPDUInOrder":
		out = pick(p.DataPDUInOrder)
		o.DataPDUInOrder = out
	case "DataSequenceInOrder":
		out = pick(p.DataSequenceInOrder)
		o.DataSequenceInOrder = out
	}
	return FormatBool(out)
}

// Finish checks the outcome once negotiation is over: FirstBurstLength may
// not exceed MaxBurstLength (RFC 7143 13.14) and is lowered to it, and the
// limits on what we send are applied to keys the peer never offered.
func (n *Negotiator) Finish() Params {
	o := &n.Params
	if !n.seen["MaxRecvDataSegmentLength"] {
		o.MaxRecvDataSegmentLength = n.Prefs.MaxRecvDataSegmentLength
	}
	if o.FirstBurstLength > o.MaxBurstLength {
		o.FirstBurstLength = o.MaxBurstLength
	}
	return *o
}

// Outcome computes a key's result from an offer and its answer, by the
// key's rule: the initiator's side of the same table. It fails when the
// answer is not a legal response to the offer.
func Outcome(key, offered, answered string) (string, error) {
	def, ok := keyDefs[key]
	if !ok {
		return "", fmt.Errorf("iscsi: key %s is not one this package negotiates", key)
	}
	switch answered {
	case ValueNotUnderstood, ValueReject, ValueIrrelevant:
		return answered, nil
	}
	switch def.rule {
	case ruleList:
		for _, v := range strings.Split(offered, ",") {
			if v == answered {
				return answered, nil
			}
		}
		return "", fmt.Errorf("iscsi: %s=%s answered with %q, which was not offered", key, offered, answered)
	case ruleMin, ruleMax:
		o, err1 := ParseNumber(offered)
		a, err2 := ParseNumber(answered)
		if err1 != nil || err2 != nil || a < def.lo || a > def.hi {
			return "", fmt.Errorf("iscsi: %s=%s answered with %q, not a number in %d..%d", key, offered, answered, def.lo, def.hi)
		}
		if def.rule == ruleMin && a > o || def.rule == ruleMax && a < o {
			return "", fmt.Errorf("iscsi: %s=%s answered with %s, which the key's rule does not allow", key, offered, answered)
		}
		return answered, nil
	case ruleOr, ruleAnd:
		o, err1 := ParseBool(offered)
		a, err2 := ParseBool(answered)
		if err1 != nil || err2 != nil {
			return "", fmt.Errorf("iscsi: %s=%s answered with %q, not Yes or No", key, offered, answered)
		}
		if def.rule == ruleOr && o && !a || def.rule == ruleAnd && !o && a {
			return "", fmt.Errorf("iscsi: %s=%s answered with %s, which the key's rule does not allow", key, offered, answered)
		}
		return answered, nil
	}
	return answered, nil
}

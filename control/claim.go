package control

import (
	"context"
	"fmt"
	"net/http"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// The claiming routes: the claim-rule lifecycle (add, remove, move, load,
// run), claiming (unclaim, reclaim), the masked and unclaimed paths, SATP
// rules and default PSPs at runtime, and adapter rescan. They are part of
// the API like those of api.go; registered by claimRoutes.
const (
	RouteClaimRule = "POST /v1/claimrule"      // ClaimRuleRequest → ClaimRuleReply
	RouteClaiming  = "POST /v1/claiming"       // ClaimingRequest → ClaimingReply
	RouteOffline   = "GET /v1/claiming"        // → OfflineReply
	RouteSATPRule  = "POST /v1/satprule"       // SATPRuleRequest → host.RuleChange
	RouteSATPSet   = "POST /v1/satp"           // SATPSetRequest → nmp.PluginInfo
	RouteSATPs     = "GET /v1/satps"           // → SATPsReply
	RouteRescan    = "POST /v1/adapter/rescan" // RescanRequest → host.RescanResult
)

type (
	// ClaimRuleRequest changes the claim rules. Action: add (Rule; rule
	// number 0 autoassigns), remove (ID), move (ID to To), load, run.
	ClaimRuleRequest struct {
		Action string      `json:"action"`
		Rule   *mpath.Rule `json:"rule,omitempty"`
		ID     int         `json:"id,omitempty"`
		To     int         `json:"to,omitempty"`
	}
	// ClaimRuleReply says what changed (add, remove, move, load) and what
	// happened to each path (run).
	ClaimRuleReply struct {
		Change   *host.RuleChange    `json:"change,omitempty"`
		Outcomes []host.ClaimOutcome `json:"outcomes,omitempty"`
	}
	// ClaimingRequest unclaims paths (one of Path, Device, Adapter) or
	// reclaims a device's paths (Device).
	ClaimingRequest struct {
		Action  string `json:"action"`
		Path    string `json:"path,omitempty"`
		Device  string `json:"device,omitempty"`
		Adapter string `json:"adapter,omitempty"`
	}
	// ClaimingReply is what happened to each path.
	ClaimingReply struct {
		Outcomes []host.ClaimOutcome `json:"outcomes"`
	}
	// OfflineReply lists the masked and unclaimed paths.
	OfflineReply struct {
		Paths []host.OfflinePath `json:"paths"`
	}
	// SATPRuleRequest adds or removes a user SATP rule.
	SATPRuleRequest struct {
		Action string       `json:"action"`
		Rule   nmp.SATPRule `json:"rule"`
	}
	// SATPSetRequest changes an SATP's default PSP ("" restores the
	// plugin's own).
	SATPSetRequest struct {
		SATP       string `json:"satp"`
		DefaultPSP string `json:"default_psp"`
	}
	// SATPsReply lists the SATPs with the mount's default PSPs.
	SATPsReply struct {
		SATPs []host.SATPInfo `json:"satps"`
	}
	// RescanRequest rescans one adapter (vmhbaN) or, empty, all.
	RescanRequest struct {
		Adapter string `json:"adapter,omitempty"`
	}
)

func (s *Server) claimRoutes(m *http.ServeMux) {
	h := s.rt.Host
	post(m, RouteClaimRule, func(ctx context.Context, r ClaimRuleRequest) (ClaimRuleReply, error) {
		var ch host.RuleChange
		var err error
		switch r.Action {
		case "add":
			if r.Rule == nil {
				return ClaimRuleReply{}, fmt.Errorf("%w: claimrule add: give the rule", ErrInvalid)
			}
			ch, err = h.ClaimRuleAdd(*r.Rule)
		case "remove":
			ch, err = h.ClaimRuleRemove(r.ID)
		case "move":
			ch, err = h.ClaimRuleMove(r.ID, r.To)
		case "load":
			ch = h.ClaimRuleLoad()
		case "run":
			return ClaimRuleReply{Outcomes: h.RunClaimRules(ctx)}, nil
		default:
			return ClaimRuleReply{}, fmt.Errorf("%w: claimrule action %q: want add, remove, move, load or run", ErrInvalid, r.Action)
		}
		if err != nil {
			return ClaimRuleReply{}, err
		}
		return ClaimRuleReply{Change: &ch}, nil
	})
	post(m, RouteClaiming, func(ctx context.Context, r ClaimingRequest) (ClaimingReply, error) {
		var out []host.ClaimOutcome
		var err error
		switch r.Action {
		case "unclaim":
			out, err = h.Unclaim(ctx, host.UnclaimRequest{Path: r.Path, Device: r.Device, Adapter: r.Adapter})
		case "reclaim":
			if r.Device == "" {
				return ClaimingReply{}, fmt.Errorf("%w: reclaim: give --device", ErrInvalid)
			}
			out, err = h.Reclaim(ctx, r.Device)
		default:
			return ClaimingReply{}, fmt.Errorf("%w: claiming action %q: want unclaim or reclaim", ErrInvalid, r.Action)
		}
		if out == nil {
			out = []host.ClaimOutcome{}
		}
		return ClaimingReply{Outcomes: out}, err
	})
	get(m, RouteOffline, func(*http.Request) (OfflineReply, error) { return OfflineReply{Paths: h.Offline()}, nil })
	post(m, RouteSATPRule, func(_ context.Context, r SATPRuleRequest) (host.RuleChange, error) {
		switch r.Action {
		case "add":
			return h.SATPRuleAdd(r.Rule)
		case "remove":
			return h.SATPRuleRemove(r.Rule)
		}
		return host.RuleChange{}, fmt.Errorf("%w: satp rule action %q: want add or remove", ErrInvalid, r.Action)
	})
	post(m, RouteSATPSet, func(_ context.Context, r SATPSetRequest) (host.SATPInfo, error) {
		return h.SetSATPDefaultPSP(r.SATP, r.DefaultPSP)
	})
	get(m, RouteSATPs, func(*http.Request) (SATPsReply, error) { return SATPsReply{SATPs: h.SATPs()}, nil })
	post(m, RouteRescan, func(ctx context.Context, r RescanRequest) (host.RescanResult, error) {
		return h.Rescan(ctx, r.Adapter)
	})
}

// ClaimRule changes the claim rules (add, remove, move, load, run).
func (c *Client) ClaimRule(ctx context.Context, r ClaimRuleRequest) (ClaimRuleReply, error) {
	var rep ClaimRuleReply
	err := c.call(ctx, RouteClaimRule, r, &rep)
	return rep, err
}

// Claiming unclaims or reclaims paths.
func (c *Client) Claiming(ctx context.Context, r ClaimingRequest) (ClaimingReply, error) {
	var rep ClaimingReply
	err := c.call(ctx, RouteClaiming, r, &rep)
	return rep, err
}

// Offline lists the masked and unclaimed paths.
func (c *Client) Offline(ctx context.Context) (OfflineReply, error) {
	var rep OfflineReply
	err := c.call(ctx, RouteOffline, nil, &rep)
	return rep, err
}

// SATPRule adds or removes a user SATP rule.
func (c *Client) SATPRule(ctx context.Context, r SATPRuleRequest) (host.RuleChange, error) {
	var rep host.RuleChange
	err := c.call(ctx, RouteSATPRule, r, &rep)
	return rep, err
}

// SATPSet changes an SATP's default PSP.
func (c *Client) SATPSet(ctx context.Context, r SATPSetRequest) (host.SATPInfo, error) {
	var rep host.SATPInfo
	err := c.call(ctx, RouteSATPSet, r, &rep)
	return rep, err
}

// SATPs lists the SATPs with the mount's default PSPs.
func (c *Client) SATPs(ctx context.Context) (SATPsReply, error) {
	var rep SATPsReply
	err := c.call(ctx, RouteSATPs, nil, &rep)
	return rep, err
}

// Rescan rescans an adapter ("" : all).
func (c *Client) Rescan(ctx context.Context, adapter string) (host.RescanResult, error) {
	var rep host.RescanResult
	err := c.call(ctx, RouteRescan, RescanRequest{Adapter: adapter}, &rep)
	return rep, err
}

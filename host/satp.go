package host

import (
	"strings"

	"github.com/mpathfs/mpathfs/nmp"
)

// SATP rules at runtime (ESXi's `esxcli storage nmp satp rule add|remove`
// and `satp set --default-psp`). A rule change is effective at once for
// the devices made from then on (`adapter rescan`); devices already made
// keep their SATP and PSP, and their explanation.
// Rules go to the config file like claim rules (rulefile.go); a default
// PSP changed by `satp set` lasts for the mount.

// SATPRuleAdd adds a user SATP rule.
func (h *Host) SATPRuleAdd(r nmp.SATPRule) (RuleChange, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	if err := h.satpRules.Add(r); err != nil {
		if strings.Contains(err.Error(), "already exists") {
			return RuleChange{}, Kinded(ErrExists, err)
		}
		return RuleChange{}, Kinded(ErrInvalid, err)
	}
	if err := h.saveRules(); err != nil {
		h.satpRules.Remove(r)
		return RuleChange{}, err
	}
	return RuleChange{Where: h.RuleStore()}, nil
}

// SATPRuleRemove removes the user SATP rules that name the SATP and match
// exactly the rule's attributes.
func (h *Host) SATPRuleRemove(r nmp.SATPRule) (RuleChange, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	var gone []nmp.SATPRule
	for _, q := range h.satpRules.List() {
		if q.Group == "user" && q.SATP == r.SATP && q.Vendor == r.Vendor && q.Model == r.Model && strings.EqualFold(q.Transport, r.Transport) && q.Driver == r.Driver && q.ClaimOptions == r.ClaimOptions {
			gone = append(gone, q)
		}
	}
	if _, err := h.satpRules.Remove(r); err != nil {
		return RuleChange{}, Kinded(ErrNotFound, err)
	}
	if err := h.saveRules(); err != nil {
		for _, q := range gone {
			h.satpRules.Add(q)
		}
		return RuleChange{}, err
	}
	return RuleChange{Where: h.RuleStore()}, nil
}

// SetSATPDefaultPSP changes an SATP's default PSP for the devices claimed
// from now on ("" restores the plugin's).
func (h *Host) SetSATPDefaultPSP(satp, psp string) (nmp.PluginInfo, error) {
	info, err := h.satpRules.SetDefaultPSP(satp, psp)
	if err != nil {
		return info, Kinded(ErrInvalid, err)
	}
	return info, nil
}

// SATPs lists the SATPs with the default PSPs this host uses.
func (h *Host) SATPs() []nmp.PluginInfo { return h.satpRules.SATPs() }

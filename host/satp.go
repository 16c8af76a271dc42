package host

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mpathfs/mpathfs/nmp"
)

// SATP rules at runtime (ESXi's `esxcli storage nmp satp rule add|remove`
// and `satp set --default-psp`). A rule change is effective at once for
// the devices made from then on (`adapter rescan`); devices already made
// keep their SATP and PSP, and their explanation.
// Rules go to the config file like claim rules (rulefile.go), and so does
// a default PSP changed by `satp set` (its satp_default_psp key, read
// again at the next mount), as ESXi keeps `satp set --default-psp` across
// reboots. Without a config file both last for the mount.

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

// SATPInfo is an SATP as `satp list` shows it: its default PSP and
// where that comes from.
type SATPInfo struct {
	nmp.PluginInfo
	// DefaultPSPSource: "plugin" (the SATP's own default), "config file
	// F" (set by `satp set` or the file's satp_default_psp), or "memory
	// (…)" when the mount has no config file to keep it in.
	DefaultPSPSource string `json:"default_psp_source"`
}

// SetSATPDefaultPSP changes an SATP's default PSP for the devices claimed
// from now on ("" restores the plugin's) and writes it to the config file
// (satp_default_psp), so the next mount with that file has it too. A bad
// SATP or PSP name is ErrInvalid and the file is not touched; a file that
// cannot be written undoes the change.
func (h *Host) SetSATPDefaultPSP(satp, psp string) (SATPInfo, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	before := DefaultPSPOverrides(h.satpRules)
	info, err := h.satpRules.SetDefaultPSP(satp, psp)
	if err != nil {
		return SATPInfo{}, Kinded(ErrInvalid, fmt.Errorf("%v (`mpathfs satp list` and `mpathfs psp list` name them)", err))
	}
	if err := h.saveRules(); err != nil {
		_, _ = h.satpRules.SetDefaultPSP(info.Name, before[info.Name])
		return SATPInfo{}, err
	}
	return h.satpInfo(info), nil
}

// SATPs lists the SATPs with the default PSPs this host uses and where
// each comes from.
func (h *Host) SATPs() []SATPInfo {
	out := []SATPInfo{}
	for _, p := range h.satpRules.SATPs() {
		out = append(out, h.satpInfo(p))
	}
	return out
}

func (h *Host) satpInfo(p nmp.PluginInfo) SATPInfo {
	src := "plugin"
	if _, ok := DefaultPSPOverrides(h.satpRules)[p.Name]; ok {
		src = h.RuleStore()
	}
	return SATPInfo{PluginInfo: p, DefaultPSPSource: src}
}

// DefaultPSPOverrides are the SATPs whose default PSP in rules is not the
// plugin's own, with that PSP: what satp_default_psp keeps.
func DefaultPSPOverrides(rules *nmp.SATPRules) map[string]string {
	own := map[string]string{}
	for _, p := range nmp.SATPs() {
		own[p.Name] = p.DefaultPSP
	}
	out := map[string]string{}
	for _, p := range rules.SATPs() {
		if p.DefaultPSP != own[p.Name] {
			out[p.Name] = p.DefaultPSP
		}
	}
	return out
}

// SetDefaultPSPs applies a config file's satp_default_psp (SATP → PSP) to
// rules; a bad name is an error that says which entry.
func SetDefaultPSPs(rules *nmp.SATPRules, m map[string]string) error {
	for _, satp := range slices.Sorted(maps.Keys(m)) {
		if m[satp] == "" {
			return fmt.Errorf("satp_default_psp: %s: no PSP: name one (`mpathfs psp list`) or remove the entry for the plugin's own", satp)
		}
		if _, err := rules.SetDefaultPSP(satp, m[satp]); err != nil {
			return fmt.Errorf("satp_default_psp: %v (`mpathfs satp list` and `mpathfs psp list` name them)", err)
		}
	}
	return nil
}

// Package nmp is the Native Multipathing Plugin: the I/O flow of
// the design brief (PSP select, I/O under a per-I/O deadline, SATP
// judgement, path state change, bounded retry, All-Paths-Down queueing),
// the path checker with flap damping, the SATP and PSP interfaces and
// registries, and the built-in plugins: VMW_SATP_DEFAULT_AA,
// VMW_SATP_LOCAL, VMW_PSP_FIXED, VMW_PSP_MRU, VMW_PSP_RR, and
// dm-multipath's queue-length and service-time selectors.
package nmp

import "github.com/mpathfs/mpathfs/mpath"

// MPPName is the NMP's name in the plugin registry and claim rules.
const MPPName = "NMP"

func init() { mpath.RegisterMPP(nmpPlugin{}) }

type nmpPlugin struct{}

func (nmpPlugin) Name() string { return MPPName }

func (nmpPlugin) NewDevice(cfg mpath.DeviceConfig, paths []*mpath.Path, events *mpath.Events) (mpath.Device, error) {
	return NewDevice(cfg, paths, events)
}

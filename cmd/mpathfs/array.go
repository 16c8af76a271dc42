package main

import (
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// labArray is a simulated array in front of a device's store.
type labArray struct{}

func newArrayFor(dc DeviceConfig) (*labArray, error) { return nil, nil }

func (a *labArray) port(pc PathConfig, b backends.Backend, loc mpath.Location) (backends.Backend, mpath.Location, error) {
	return b, loc, nil
}

func (a *labArray) Close() error { return nil }

// claimedByNMP runs the claim rules for a new path: false when a rule
// gives it to another plugin (MASK_PATH hides it).
func claimedByNMP(p *mpath.Path) (bool, string) { return true, "default: NMP" }

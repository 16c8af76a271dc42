package alua

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// options parses an SATP's name=value options and rejects unknown ones.
type options struct {
	plugin string
	m      map[string]string
	used   map[string]bool
	err    error
}

func newOptions(plugin string, m map[string]string) *options {
	return &options{plugin: plugin, m: m, used: map[string]bool{}}
}

func (o *options) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

func (o *options) bool(key string, def bool) bool {
	o.used[key] = true
	v, ok := o.m[key]
	if !ok {
		return def
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "on", "true", "yes":
		return true
	case "0", "off", "false", "no":
		return false
	}
	o.fail(fmt.Errorf("%s option %s=%q: want on or off", o.plugin, key, v))
	return def
}

func (o *options) uint(key string, def uint64, min uint64) uint64 {
	o.used[key] = true
	v, ok := o.m[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 63)
	if err != nil || n < min {
		o.fail(fmt.Errorf("%s option %s=%q: want a whole number ≥ %d", o.plugin, key, v, min))
		return def
	}
	return n
}

func (o *options) done() error {
	if o.err != nil {
		return o.err
	}
	var unknown, known []string
	for k := range o.m {
		if !o.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	for k := range o.used {
		known = append(known, k)
	}
	sort.Strings(unknown)
	sort.Strings(known)
	return fmt.Errorf("%s: unknown option(s) %s (known: %s)", o.plugin, strings.Join(unknown, ", "), strings.Join(known, ", "))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

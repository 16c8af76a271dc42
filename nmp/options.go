package nmp

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Options parses a plugin's name=value options (SATPs and PSPs, here and in
// other packages) and rejects unknown ones: each getter marks its key
// known and returns the default when the key is absent; Done reports the
// first bad value, else the unknown keys with the known ones.
//
//	o := nmp.NewOptions(name, opts)
//	iops := o.Uint("iops", 1000, 1)
//	if err := o.Done(); err != nil { … }
type Options struct {
	plugin string
	m      map[string]string
	used   map[string]bool
	err    error
}

// NewOptions starts parsing the options m of the plugin named plugin.
func NewOptions(plugin string, m map[string]string) *Options {
	return &Options{plugin: plugin, m: m, used: map[string]bool{}}
}

// String returns the value of key as given.
func (o *Options) String(key, def string) string {
	o.used[key] = true
	if v, ok := o.m[key]; ok {
		return v
	}
	return def
}

// Uint returns the value of key, a whole number of at least min.
func (o *Options) Uint(key string, def uint64, min uint64) uint64 {
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

// Bool returns the value of key: on, true, yes or 1; off, false, no or 0.
func (o *Options) Bool(key string, def bool) bool {
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
	o.fail(fmt.Errorf("%s option %s=%q: want on or off (or 1 or 0)", o.plugin, key, v))
	return def
}

func (o *Options) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

// Done reports the first bad value, or the unknown options.
func (o *Options) Done() error {
	if o.err != nil {
		return o.err
	}
	var unknown []string
	for k := range o.m {
		if !o.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	known := make([]string, 0, len(o.used))
	for k := range o.used {
		known = append(known, k)
	}
	sort.Strings(known)
	return fmt.Errorf("%s: unknown option(s) %s (known: %s)", o.plugin, strings.Join(unknown, ", "), strings.Join(known, ", "))
}

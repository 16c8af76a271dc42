package host

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// A host's identity: its name (`mount --host NAME`, `host:` in the config;
// the machine's hostname by default) gives the initiator name of every
// iscsi:// path that names none, so two mounts with different names on one
// machine are two hosts to the array — their own I_T nexuses, their own
// registrations and reservations, their own unit attentions and ALUA views.

// InitiatorPrefix is the IQN prefix of a host's default initiator name.
const InitiatorPrefix = "iqn.2026-12.io.mpathfs:host."

// CheckName checks a host name: letters, digits, '.', '-' and '_', at most
// 200 characters (it becomes part of an IQN of at most 223 bytes).
func CheckName(name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("host name %q: want 1 to 200 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("host name %q: %q is not allowed (use letters, digits, '.', '-' and '_')", name, r)
		}
	}
	return nil
}

// DefaultName is the machine's hostname as a host name (characters an IQN
// cannot hold become '-'), or "localhost".
func DefaultName() string {
	n, err := os.Hostname()
	if err != nil || n == "" {
		return "localhost"
	}
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, n)
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

// InitiatorName is the default initiator IQN of host name: IQNs are lower
// case, '_' becomes '-'.
func InitiatorName(name string) string {
	return InitiatorPrefix + strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// WithInitiator returns uri with initiator= set to the host's initiator
// name when it is an iscsi:// URI that names none; other URIs unchanged.
func WithInitiator(uri, hostName string) string {
	if hostName == "" || !strings.HasPrefix(uri, "iscsi://") {
		return uri
	}
	u, err := url.Parse(uri)
	if err != nil {
		return uri // the opener reports it
	}
	q := u.Query()
	if q.Has("initiator") {
		return uri
	}
	sep := "?"
	if u.RawQuery != "" {
		sep = "&"
	}
	return uri + sep + "initiator=" + url.QueryEscape(InitiatorName(hostName))
}

// Name is the host's name (Options.Name).
func (h *Host) Name() string { return h.name }

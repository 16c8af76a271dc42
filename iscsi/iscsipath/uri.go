package iscsipath

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/iscsi"
)

// DefaultPort is the IANA port for iSCSI.
const DefaultPort = 3260

// DefaultInitiator is the initiator name used when the URI names none.
const DefaultInitiator = "iqn.2026-01.io.mpathfs:initiator"

func init() {
	backends.Register("iscsi", openURI)
}

func openURI(ctx context.Context, u *url.URL) (backends.Backend, error) {
	o, err := ParseURI(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, o)
}

// Options are what an iscsi:// URI says: the session's configuration, the
// LUN, and the path's limits.
type Options struct {
	Session iscsi.InitiatorConfig
	LUN     uint64
	// Timeout bounds one command when the caller's context has no earlier
	// deadline (default 30s).
	Timeout time.Duration
	// MaxTransfer caps the bytes one READ or WRITE carries (default 1 MiB,
	// lowered to the LU's VPD 0xB0 maximum transfer length).
	MaxTransfer int
	// Name is the URI with secrets redacted, for messages.
	Name string
}

var knownParams = []string{
	"initiator", "chap_user", "chap_secret", "mutual_user", "mutual_secret",
	"header_digest", "data_digest", "isid", "timeout", "login_timeout", "max_xfer",
}

// ParseURI turns an iscsi:// URI into Options; every mistake is named.
func ParseURI(u *url.URL) (Options, error) {
	bad := func(format string, args ...any) (Options, error) {
		return Options{}, fmt.Errorf("iSCSI URI %q: %s", redact(u), fmt.Sprintf(format, args...))
	}
	if u.Scheme != "iscsi" {
		return bad("scheme %q is not iscsi", u.Scheme)
	}
	if u.Opaque != "" || u.User != nil {
		return bad("write iscsi://HOST[:PORT]/TARGET-IQN/LUN (credentials go in chap_user= and chap_secret=)")
	}
	o := Options{Name: redact(u), Timeout: 30 * time.Second, MaxTransfer: 1 << 20}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return bad("no host; write iscsi://127.0.0.1:3260/iqn.…/0")
	}
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return bad("bad port %q", port)
	}
	o.Session.Address = net.JoinHostPort(host, port)
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return bad("the path must be /TARGET-IQN/LUN, e.g. /iqn.2026-01.org.example:disk1/0")
	}
	o.Session.TargetName = parts[0]
	if err := iscsi.CheckNodeName(o.Session.TargetName); err != nil {
		return bad("target name: %v", err)
	}
	lun, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil {
		return bad("LUN %q is not a number from 0 to 65535", parts[1])
	}
	o.LUN = lun
	q := u.Query()
	for k := range q {
		i := sort.SearchStrings(sortedParams, k)
		if i == len(sortedParams) || sortedParams[i] != k {
			return bad("unknown query parameter %q (known: %s)", k, strings.Join(knownParams, ", "))
		}
		if len(q[k]) != 1 {
			return bad("query parameter %q given %d times", k, len(q[k]))
		}
	}
	o.Session.InitiatorName = DefaultInitiator
	if v := q.Get("initiator"); q.Has("initiator") {
		if err := iscsi.CheckNodeName(v); err != nil {
			return bad("initiator=: %v", err)
		}
		o.Session.InitiatorName = v
	}
	o.Session.CHAPUser, o.Session.CHAPSecret = q.Get("chap_user"), q.Get("chap_secret")
	if (o.Session.CHAPUser == "") != (o.Session.CHAPSecret == "") {
		return bad("CHAP needs both chap_user= and chap_secret=")
	}
	o.Session.MutualUser, o.Session.MutualSecret = q.Get("mutual_user"), q.Get("mutual_secret")
	if (o.Session.MutualUser == "") != (o.Session.MutualSecret == "") {
		return bad("mutual CHAP needs both mutual_user= and mutual_secret=")
	}
	if o.Session.MutualUser != "" && o.Session.CHAPUser == "" {
		return bad("mutual CHAP (mutual_user=) needs CHAP (chap_user= and chap_secret=) too")
	}
	for _, d := range []struct {
		key string
		dst *bool
	}{{"header_digest", &o.Session.HeaderDigest}, {"data_digest", &o.Session.DataDigest}} {
		switch v := strings.ToLower(q.Get(d.key)); v {
		case "", "none":
		case "crc32c":
			*d.dst = true
		default:
			return bad("%s=%q: want crc32c or none", d.key, v)
		}
	}
	if v := q.Get("isid"); v != "" {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != 6 {
			return bad("isid=%q is not 12 hex digits (6 bytes)", v)
		}
		copy(o.Session.ISID[:], b)
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{"timeout", &o.Timeout}, {"login_timeout", &o.Session.LoginTimeout}} {
		if v := q.Get(d.key); v != "" {
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return bad("%s=%q is not a positive duration like 5s", d.key, v)
			}
			*d.dst = t
		}
	}
	if v := q.Get("max_xfer"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4096 || n > 16<<20 {
			return bad("max_xfer=%q is not a byte count from 4096 to 16777216", v)
		}
		o.MaxTransfer = n
	}
	return o, nil
}

var sortedParams = func() []string {
	s := append([]string(nil), knownParams...)
	sort.Strings(s)
	return s
}()

// redact hides the CHAP secrets of a URI.
func redact(u *url.URL) string {
	c := *u
	q := c.Query()
	for _, k := range []string{"chap_secret", "mutual_secret"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	c.RawQuery = q.Encode()
	return c.String()
}

package nbd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
)

// DefaultPort is the IANA port for NBD.
const DefaultPort = 10809

func init() {
	for _, s := range []string{"nbd", "nbd+unix", "nbds", "nbds+unix"} {
		backends.Register(s, openURI)
	}
}

func openURI(ctx context.Context, u *url.URL) (backends.Backend, error) {
	opts, err := ParseURI(u)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, opts)
}

var knownParams = []string{
	"socket", "tls-certificates", "tls-ca", "tls-cert", "tls-key", "tls-servername",
	"connect-timeout", "watchdog", "structured", "connections", "cache",
}

// ParseURI turns a path URI into Options. See the package documentation
// for the schemes and query parameters.
func ParseURI(u *url.URL) (Options, error) {
	var o Options
	bad := func(format string, args ...any) (Options, error) {
		return Options{}, fmt.Errorf("NBD URI %q: %s", u.String(), fmt.Sprintf(format, args...))
	}
	useTLS, unix := false, false
	switch u.Scheme {
	case "nbd":
	case "nbds":
		useTLS = true
	case "nbd+unix":
		unix = true
	case "nbds+unix":
		useTLS, unix = true, true
	default:
		return bad("scheme %q is not nbd, nbds, nbd+unix or nbds+unix", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("not a hierarchical URI; write nbd://host:port/export or nbd+unix:///export?socket=/path")
	}
	if u.User != nil {
		return bad("user info is not supported")
	}
	o.Name = u.Redacted()
	o.Export = strings.TrimPrefix(u.Path, "/")
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
	if unix {
		if u.Host != "" {
			return bad("a Unix socket URI has no host; write %s:///export?socket=/path", u.Scheme)
		}
		o.Network, o.Address = "unix", q.Get("socket")
		if o.Address == "" {
			return bad("missing ?socket=/path/to/socket")
		}
	} else {
		if q.Has("socket") {
			return bad("socket= is only for nbd+unix:// and nbds+unix://")
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = strconv.Itoa(DefaultPort)
		} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return bad("bad port %q", port)
		}
		o.Network, o.Address = "tcp", net.JoinHostPort(host, port)
	}
	if v := q.Get("connect-timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return bad("connect-timeout=%q is not a positive duration like 5s", v)
		}
		o.DialTimeout = d
	}
	if v := q.Get("watchdog"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return bad("watchdog=%q is not a positive duration like 100ms", v)
		}
		o.WatchdogInterval = d
	}
	if v := q.Get("structured"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return bad("structured=%q is not a boolean", v)
		}
		o.NoStructuredReplies = !b
	}
	if q.Has("connections") {
		v := q.Get("connections")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxConnections {
			return bad("connections=%q is not a number of connections from 1 to %d", v, MaxConnections)
		}
		o.Connections = n
	}
	if q.Has("cache") {
		v := q.Get("cache")
		if v == "" {
			return bad("cache= needs a name: paths whose servers write through one cache (one host's page cache of one file) share it")
		}
		o.CacheDomain = v
	}
	tlsParams := false
	for _, k := range []string{"tls-certificates", "tls-ca", "tls-cert", "tls-key", "tls-servername"} {
		tlsParams = tlsParams || q.Has(k)
	}
	if !useTLS {
		if tlsParams {
			return bad("tls-* parameters need the nbds:// or nbds+unix:// scheme")
		}
		return o, nil
	}
	serverName := q.Get("tls-servername")
	if serverName == "" {
		if unix {
			serverName = "localhost"
		} else {
			serverName = u.Hostname()
			if serverName == "" {
				serverName = "localhost"
			}
		}
	}
	cfg, err := TLSConfig(q.Get("tls-certificates"), q.Get("tls-ca"), q.Get("tls-cert"), q.Get("tls-key"), serverName)
	if err != nil {
		return bad("%v", err)
	}
	o.TLS = cfg
	return o, nil
}

var sortedParams = func() []string {
	s := append([]string(nil), knownParams...)
	sort.Strings(s)
	return s
}()

// TLSConfig builds the client's TLS configuration. dir, if set, is a
// directory in the nbdkit/qemu layout: ca-cert.pem, and optionally
// client-cert.pem and client-key.pem. caFile, certFile and keyFile
// override the files of dir. Without any CA the system roots are used.
func TLSConfig(dir, caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	if dir != "" {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("tls-certificates: %v", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("tls-certificates=%s is not a directory", dir)
		}
		pick := func(cur *string, name string) {
			if *cur == "" {
				p := filepath.Join(dir, name)
				if _, err := os.Stat(p); err == nil {
					*cur = p
				}
			}
		}
		pick(&caFile, "ca-cert.pem")
		pick(&certFile, "client-cert.pem")
		pick(&keyFile, "client-key.pem")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both tls-cert and tls-key (or client-cert.pem and client-key.pem in tls-certificates)")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

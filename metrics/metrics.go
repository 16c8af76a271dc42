// Package metrics serves mpathfs's counters in the Prometheus text format
// (github.com/prometheus/client_golang): per path I/O counts by operation,
// bytes, errors by class and a latency histogram (fed by the NMP's Observer
// hook on every try of an I/O on a path), each path's state (one gauge per
// state, 1 for the current one), and per device failovers, All-Paths-Down
// entries, whether it is in APD and its queue depth (read from Status at
// scrape time).
//
// The endpoint is opt-in and binds to loopback by default: a listen address
// without a host ("9475", ":9475") means 127.0.0.1, and a non-loopback
// address is refused unless Options.AllowRemote is set, since the metrics
// name every path and its URI.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// DefaultAddr is where the endpoint listens unless told otherwise.
const DefaultAddr = "127.0.0.1:9475"

var pathStates = []mpath.PathState{mpath.StateActive, mpath.StateStandby, mpath.StateDisabled, mpath.StateDead, mpath.StateUnknown}

// Collector holds the metrics of a set of devices. It is an nmp.Observer
// (attach it with Add) and a prometheus.Collector for the state read from
// Status at scrape time.
type Collector struct {
	reg *prometheus.Registry

	ios     *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	errs    *prometheus.CounterVec
	latency *prometheus.HistogramVec

	stateDesc, failoverDesc, apdDesc, apdNowDesc, queueDesc, inflightDesc *prometheus.Desc
	conflictDesc                                                          *prometheus.Desc
	hedgedDesc, hedgeLostDesc, slowDesc                                   *prometheus.Desc

	mu      sync.Mutex
	devices []Observed
}

// Observed is what the collector needs of a device: its status, read at
// scrape time, and the observer hook its completions are reported through
// (*nmp.Device is one).
type Observed interface {
	Status() mpath.DeviceStatus
	SetObserver(o nmp.Observer)
}

var _ nmp.Observer = (*Collector)(nil)
var _ prometheus.Collector = (*deviceCollector)(nil)

// New returns a collector with its own registry (plus the Go and process
// collectors).
func New() *Collector {
	c := &Collector{reg: prometheus.NewRegistry()}
	pl := []string{"device", "path"}
	c.ios = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mpathfs", Name: "path_io_total",
		Help: "Completed I/O tries on a path, by operation (read, write, flush, discard, write-zeroes)."}, append(pl, "op"))
	c.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mpathfs", Name: "path_bytes_total",
		Help: "Bytes transferred on a path, by operation."}, append(pl, "op"))
	c.errs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mpathfs", Name: "path_errors_total",
		Help: "Failed I/O tries on a path, by error class (path-failure, retryable, not-ready, device-error, permanent-loss, reservation-conflict)."}, append(pl, "class"))
	c.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mpathfs", Name: "path_latency_seconds",
		Help:    "Latency of completed I/O tries on a path.",
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}}, append(pl, "op"))
	c.stateDesc = prometheus.NewDesc("mpathfs_path_state", "1 for the path's current state, 0 for the others.", []string{"device", "path", "state"}, nil)
	c.inflightDesc = prometheus.NewDesc("mpathfs_path_inflight", "I/Os in flight on the path.", pl, nil)
	c.failoverDesc = prometheus.NewDesc("mpathfs_device_failovers_total", "Paths that left the active state.", []string{"device"}, nil)
	c.apdDesc = prometheus.NewDesc("mpathfs_device_apd_entries_total", "Times the device entered All-Paths-Down.", []string{"device"}, nil)
	c.conflictDesc = prometheus.NewDesc("mpathfs_device_reservation_conflicts_total", "I/Os that met RESERVATION CONFLICT: another host holds a reservation (not path failures).", []string{"device"}, nil)
	c.apdNowDesc = prometheus.NewDesc("mpathfs_device_apd", "1 while the device is in All-Paths-Down.", []string{"device"}, nil)
	c.hedgedDesc = prometheus.NewDesc("mpathfs_path_hedged_reads_total", "Reads on the path that outlived the hedging threshold and were sent again on another path.", pl, nil)
	c.hedgeLostDesc = prometheus.NewDesc("mpathfs_path_hedge_lost_total", "Reads on the path whose hedge on another path answered first.", pl, nil)
	c.slowDesc = prometheus.NewDesc("mpathfs_path_slow", "1 while the path is marked slow (kept in the marginal group for losing to its hedges).", pl, nil)
	c.queueDesc = prometheus.NewDesc("mpathfs_device_queue_depth", "I/Os inside the device (in flight or queued).", []string{"device"}, nil)
	c.reg.MustRegister(c.ios, c.bytes, c.errs, c.latency, &deviceCollector{c},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return c
}

// Add attaches the collector to a device as its observer.
func (c *Collector) Add(d Observed) {
	c.mu.Lock()
	c.devices = append(c.devices, d)
	c.mu.Unlock()
	d.SetObserver(c)
}

// Registry is the collector's registry.
func (c *Collector) Registry() *prometheus.Registry { return c.reg }

// Handler serves the registry in the Prometheus text format.
func (c *Collector) Handler() http.Handler {
	return promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{})
}

// Completed implements nmp.Observer; it runs on the I/O path.
func (c *Collector) Completed(d *nmp.Device, p *mpath.Path, op mpath.OpKind, n int, lat time.Duration, class ioerr.Class) {
	dev, path, o := d.Name(), p.Name, op.String()
	if class != ioerr.ClassNone {
		c.errs.WithLabelValues(dev, path, class.String()).Inc()
		return
	}
	c.ios.WithLabelValues(dev, path, o).Inc()
	if n > 0 {
		c.bytes.WithLabelValues(dev, path, o).Add(float64(n))
	}
	c.latency.WithLabelValues(dev, path, o).Observe(lat.Seconds())
}

// deviceCollector reads state from Status at scrape time.
type deviceCollector struct{ c *Collector }

func (dc *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	c := dc.c
	for _, d := range []*prometheus.Desc{c.stateDesc, c.inflightDesc, c.failoverDesc, c.apdDesc, c.apdNowDesc, c.conflictDesc, c.queueDesc, c.hedgedDesc, c.hedgeLostDesc, c.slowDesc} {
		ch <- d
	}
}

func (dc *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	c := dc.c
	c.mu.Lock()
	devs := append([]Observed(nil), c.devices...)
	c.mu.Unlock()
	for _, d := range devs {
		st := d.Status()
		for _, p := range st.Paths {
			for _, s := range pathStates {
				v := 0.0
				if p.State == s.String() {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.stateDesc, prometheus.GaugeValue, v, st.Name, p.Name, s.String())
			}
			ch <- prometheus.MustNewConstMetric(c.inflightDesc, prometheus.GaugeValue, float64(p.Inflight), st.Name, p.Name)
			ch <- prometheus.MustNewConstMetric(c.hedgedDesc, prometheus.CounterValue, float64(p.Hedged), st.Name, p.Name)
			ch <- prometheus.MustNewConstMetric(c.hedgeLostDesc, prometheus.CounterValue, float64(p.HedgeLost), st.Name, p.Name)
			slow := 0.0
			if p.Slow {
				slow = 1
			}
			ch <- prometheus.MustNewConstMetric(c.slowDesc, prometheus.GaugeValue, slow, st.Name, p.Name)
		}
		apd := 0.0
		if st.APD {
			apd = 1
		}
		ch <- prometheus.MustNewConstMetric(c.failoverDesc, prometheus.CounterValue, float64(st.Failovers), st.Name)
		ch <- prometheus.MustNewConstMetric(c.apdDesc, prometheus.CounterValue, float64(st.APDEntries), st.Name)
		ch <- prometheus.MustNewConstMetric(c.apdNowDesc, prometheus.GaugeValue, apd, st.Name)
		ch <- prometheus.MustNewConstMetric(c.conflictDesc, prometheus.CounterValue, float64(st.ReservationConflicts), st.Name)
		ch <- prometheus.MustNewConstMetric(c.queueDesc, prometheus.GaugeValue, float64(st.QueueDepth), st.Name)
	}
}

// Options configure Serve.
type Options struct {
	// AllowRemote permits a listen address that is not loopback.
	AllowRemote bool
}

// ResolveAddr applies the defaults and the loopback rule to a listen
// address: "" is DefaultAddr, a missing host is 127.0.0.1, and a host that
// is not a loopback address is an error unless allowRemote.
func ResolveAddr(addr string, allowRemote bool) (string, error) {
	if addr == "" {
		return DefaultAddr, nil
	}
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("metrics address %q: want HOST:PORT, e.g. %s", addr, DefaultAddr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if !allowRemote {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", notLoopbackError{fmt.Sprintf("metrics address %q is not a loopback address: the metrics name every path and its URI; bind to 127.0.0.1 (and scrape through a proxy) or allow it explicitly", addr)}
		}
	}
	return net.JoinHostPort(host, port), nil
}

// ErrNotLoopback: the listen address is not a loopback address and
// Options.AllowRemote is not set.
var ErrNotLoopback = errors.New("metrics address is not a loopback address")

// notLoopbackError is ErrNotLoopback with the address in its message.
type notLoopbackError struct{ msg string }

func (e notLoopbackError) Error() string        { return e.msg }
func (e notLoopbackError) Is(target error) bool { return target == ErrNotLoopback }

// Server is a running metrics endpoint.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Serve listens on addr (after ResolveAddr) and serves /metrics.
func Serve(addr string, c *Collector, opts Options) (*Server, error) {
	a, err := ResolveAddr(addr, opts.AllowRemote)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", c.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "mpathfs metrics: GET /metrics")
	})
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/metrics"
)

// `mpathfs mount --metrics ADDR` (or `metrics: ADDR` in the config) serves
// Prometheus metrics. The address must be loopback unless
// MPATHFS_METRICS_ALLOW_REMOTE=1.

// serveMetrics starts the metrics endpoint of a mount's devices; the host
// stops it when it closes.
func serveMetrics(h *host.Host, addr string, stdout io.Writer) error {
	c := metrics.New()
	for _, d := range h.Devices() {
		c.Add(d)
	}
	// mpathfs_lock_lost_total: how often a device lost the lock it keeps
	// in its array LU (its writes fail with ENOLCK since).
	for dev := range h.LockLosses() {
		c.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "mpathfs", Name: "lock_lost_total",
			Help:        "Times the device lost the lock it keeps in its array LU's last block (writes fail with ENOLCK since; mount again to write).",
			ConstLabels: prometheus.Labels{"device": dev}}, func() float64 { return float64(h.LockLosses()[dev]) }))
	}
	srv, err := metrics.Serve(addr, c, metrics.Options{AllowRemote: os.Getenv("MPATHFS_METRICS_ALLOW_REMOTE") == "1"})
	if err != nil {
		if errors.Is(err, metrics.ErrNotLoopback) {
			return usageError{err.Error() + " (set MPATHFS_METRICS_ALLOW_REMOTE=1 to allow it)"}
		}
		return err
	}
	fmt.Fprintf(stdout, "mpathfs: metrics at http://%s/metrics\n", srv.Addr())
	h.OnClose(srv.Close)
	return nil
}

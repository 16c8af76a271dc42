package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/metrics"
)

// `mpathfs mount --metrics ADDR` (or `metrics: ADDR` in the config) serves
// Prometheus metrics. The address must be loopback unless
// MPATHFS_METRICS_ALLOW_REMOTE=1.

func init() {
	runtimeHooks = append(runtimeHooks, metricsRuntimeHook)
}

func metricsRuntimeHook(rt *control.Runtime, b *built, cfg *Config) error {
	if cfg.Metrics == "" {
		return nil
	}
	c := metrics.New()
	for _, d := range b.devices {
		c.Add(d)
	}
	srv, err := metrics.Serve(cfg.Metrics, c, metrics.Options{AllowRemote: os.Getenv("MPATHFS_METRICS_ALLOW_REMOTE") == "1"})
	if err != nil {
		if strings.Contains(err.Error(), "loopback") {
			return usageError{err.Error() + " (set MPATHFS_METRICS_ALLOW_REMOTE=1 to allow it)"}
		}
		return err
	}
	fmt.Fprintf(os.Stdout, "mpathfs: metrics at http://%s/metrics\n", srv.Addr())
	b.extra = append(b.extra, srv.Close)
	return nil
}

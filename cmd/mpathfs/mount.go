package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/fusedev"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"

	_ "github.com/mpathfs/mpathfs/alua" // registers VMW_SATP_ALUA and VMW_SATP_DEFAULT_AP
	_ "github.com/mpathfs/mpathfs/backends/block"
	_ "github.com/mpathfs/mpathfs/backends/nbd"
	_ "github.com/mpathfs/mpathfs/iscsi/iscsipath"
)

const defaultStateDir = "/var/lib/mpathfs"

func cmdMount(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "mount", "mount [--control S] [--name NAME] [--path URI]... [--psp P] [--satp S] [--config FILE] MOUNTPOINT")
	ctl := fs.String("control", "", "control socket (default $MPATHFS_CONTROL or "+control.DefaultSocket+")")
	name := fs.String("name", "", "device name for --path devices (default mp0; the default lab is \"lab\")")
	hostName := fs.String("host", "", "this mount's host name (default: the machine's hostname): iscsi:// paths without initiator= log in as iqn.2026-12.io.mpathfs:host.NAME, so two mounts with different --host are two hosts to the array (their own registrations and reservations)")
	wwid := fs.String("wwid", "", "assert the WWID of the --path device: file, loop and NBD paths adopt it, checked by label and sample blocks (one file through two mounts)")
	var paths, pspOpts, satpOpts, scans multiFlag
	fs.Var(&scans, "scan", "a block-device glob (repeatable), e.g. /dev/disk/by-id/wwn-*: adapter rescan and hotplug claim the block devices it matches that no path leads to yet (a new WWID becomes a new device)")
	fs.Var(&paths, "path", "a path URI: file:///abs/path, a bare file path, nbd://host:port/export, nbd+unix:///export?socket=S, block:///dev/sdX, iscsi://host[:port]/TARGET-IQN/LUN[?initiator=IQN&chap_user=U&chap_secret=S] (repeatable)")
	groupWWID := fs.Bool("group-by-wwid", false, "form one device per WWID the --path devices report (names mpatha, mpathb, … like dm-multipath's user_friendly_names)")
	psp := fs.String("psp", "", "path selection plugin (default: the SATP's)")
	fs.Var(&pspOpts, "psp-option", "PSP option name=value (repeatable), e.g. iops=1")
	satp := fs.String("satp", "", "storage array type plugin (default: the SATP rules decide: VMW_SATP_LOCAL for file and block paths, VMW_SATP_ALUA for LUs that report TPGS, else VMW_SATP_DEFAULT_AA; mpathfs explain DEVICE shows which rule matched)")
	fs.Var(&satpOpts, "satp-option", "SATP option name=value (repeatable)")
	config := fs.String("config", "", "YAML file describing devices (see README)")
	stateDir := fs.String("state-dir", "", "where the default lab keeps its store (default $MPATHFS_STATE_DIR or "+defaultStateDir+")")
	size := fs.String("size", "", "create missing file stores with this size (e.g. 1G)")
	ioTimeout := fs.Duration("io-timeout", 0, "per-I/O deadline (default 5s)")
	apdTimeout := fs.Duration("apd-timeout", 0, "All-Paths-Down timeout: how long I/O waits for a path to return (default 140s; must be positive: to fail at once use --no-path-retry fail)")
	failback := fs.String("failback", "", "when a returning path (group) is used again: immediate (default), manual, followover or N seconds (docs/policies.md)")
	noPathRetry := fs.String("no-path-retry", "", "I/O while no path is usable: queue (wait for a path), fail (at once) or N checker intervals (default: wait --apd-timeout)")
	checkInterval := fs.Duration("check-interval", 0, "path checker interval (default 2s)")
	flapThreshold := fs.Int("flap-threshold", 0, "failures within --flap-window that hold a path down (default 3)")
	flapWindow := fs.Duration("flap-window", 0, "window for counting path failures (default 60s)")
	holdDown := fs.Duration("hold-down", 0, "how long a flapping path is held out of service (default 10s, doubling while it keeps flapping)")
	hedge := fs.String("hedge", "", "hedged reads: on (the default) or off; a read outstanding past --hedge-multiplier × its path's p99 is sent again on another path")
	hedgeMult := fs.Float64("hedge-multiplier", 0, "hedging threshold as a multiple of the path's recent p99 read latency (default 3)")
	hedgeFloor := fs.Duration("hedge-floor", 0, "lowest hedging threshold (default 2ms)")
	hedgeCeiling := fs.Duration("hedge-ceiling", 0, "highest hedging threshold (default 50ms, at most half --io-timeout)")
	trace := fs.String("trace", "", "record every I/O as a JSON line to this file")
	scenarioFile := fs.String("scenario", "", "play this scenario file (see `mpathfs scenario`) once the mount is up")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics at this address (loopback only), e.g. 127.0.0.1:9475")
	multiWriter := fs.Bool("multi-writer", false, "share the stores with other hosts: up to 8 multi-writer mounts open one store (they must coordinate their writes, e.g. with a cluster lock manager); by default a store is opened by one host at a time and a second is refused, naming the holder")
	lockSector := fs.String("lock-sector", "", "the lock of array LUs (iscsi:// paths) in the LU's last block, hidden from the device, taken by COMPARE AND WRITE and kept by a heartbeat, as VMFS does; a host that loses it stops writing (ENOLCK): auto (the default): when that block is empty or a lock record already, else the LU is served unlocked at full size with a warning; last: always, refusing an LU whose last block holds data; none: no lock on array LUs")
	verify := fs.Bool("verify", false, "integrity oracle: checksum acknowledged writes, verify reads (`mpathfs verify DEVICE` checks)")
	allowOther := fs.Bool("allow-other", false, "let other users open the device files")
	debug := fs.Bool("debug", false, "log every FUSE request")
	maxRequests := fs.Int("max-requests", 0, fmt.Sprintf("FUSE requests held at once, each with a 1 MiB buffer (default %d; -1: no bound)", fusedev.DefaultMaxRequests))
	memLimit := fs.String("memory-limit", "", "soft memory limit of the daemon: auto (sized from --max-requests), off, or a size like 256MiB (default auto; GOMEMLIMIT wins)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one MOUNTPOINT (got %d arguments)", len(pos))
	}
	if flagGiven(fs, "apd-timeout") {
		if err := nmp.CheckAPDTimeout(*apdTimeout); err != nil {
			return usagef("--apd-timeout: %v", err)
		}
	}
	if _, err := nmp.ParseFailback(*failback); err != nil {
		return usagef("--failback: %v", err)
	}
	if _, err := nmp.ParseNoPathRetry(*noPathRetry); err != nil {
		return usagef("--no-path-retry: %v", err)
	}
	mountpoint, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}

	if *wwid != "" && (len(paths) == 0 || *groupWWID) {
		return usagef("--wwid asserts the identity of the --path device: give it with --path (in a config, use wwid:)")
	}
	var cfg *Config
	switch {
	case *config != "" && len(paths) > 0:
		return usagef("give either --config or --path, not both")
	case *config != "":
		if cfg, err = LoadConfig(*config); err != nil {
			return err
		}
	case len(paths) > 0 && *groupWWID:
		if *name != "" {
			return usagef("give either --name or --group-by-wwid")
		}
		hn := *hostName
		if hn == "" {
			hn = host.DefaultName()
		}
		named := make([]string, len(paths))
		for i, p := range paths {
			named[i] = host.WithInitiator(p, hn)
		}
		groups, err := host.GroupByWWID(context.Background(), named, 0)
		if errors.Is(err, host.ErrNoWWID) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		cfg = &Config{}
		for i, g := range groups {
			dc := host.DeviceConfig{Name: host.FriendlyName(i), WWID: g.WWID, WWIDReported: true}
			for _, u := range g.URIs {
				dc.Paths = append(dc.Paths, host.PathConfig{URI: u})
			}
			cfg.Devices = append(cfg.Devices, dc)
		}
	case len(paths) > 0:
		dc := host.DeviceConfig{Name: *name, PSP: *psp, SATP: *satp, Size: *size, WWID: *wwid}
		if dc.Name == "" {
			dc.Name = "mp0"
		}
		for _, p := range paths {
			dc.Paths = append(dc.Paths, host.PathConfig{URI: p})
		}
		cfg = &Config{Devices: []host.DeviceConfig{dc}}
	default:
		cfg = defaultLab(stateDirOf(*stateDir))
		if *name != "" {
			cfg.Devices[0].Name = *name
		}
		if *psp != "" {
			cfg.Devices[0].PSP = *psp
		}
		if *satp != "" {
			cfg.Devices[0].SATP = *satp
		}
	}
	// Flags given on the command line override the file for every device.
	for i := range cfg.Devices {
		d := &cfg.Devices[i]
		if *psp != "" {
			d.PSP = *psp
		}
		if *satp != "" {
			d.SATP = *satp
		}
		if len(pspOpts) > 0 {
			if d.PSPOptions, err = parseKV(pspOpts, "--psp-option"); err != nil {
				return err
			}
		}
		if len(satpOpts) > 0 {
			if d.SATPOptions, err = parseKV(satpOpts, "--satp-option"); err != nil {
				return err
			}
		}
		if *ioTimeout > 0 {
			d.IOTimeout = host.Duration(*ioTimeout)
		}
		if *apdTimeout > 0 {
			t := host.Duration(*apdTimeout)
			d.APDTimeout = &t
		}
		if *failback != "" {
			d.Failback = *failback
		}
		if *noPathRetry != "" {
			d.NoPathRetry = *noPathRetry
		}
		if *checkInterval > 0 {
			d.CheckInterval = host.Duration(*checkInterval)
		}
		if *flapThreshold > 0 {
			d.FlapThreshold = *flapThreshold
		}
		if *flapWindow > 0 {
			d.FlapWindow = host.Duration(*flapWindow)
		}
		if *holdDown > 0 {
			d.HoldDown = host.Duration(*holdDown)
		}
		if *hedge != "" {
			if _, err := nmp.ParseHedgeMode(*hedge); err != nil {
				return fmt.Errorf("--hedge: %v", err)
			}
			d.HedgeReads = *hedge
		}
		if *hedgeMult != 0 {
			d.HedgeMultiplier = *hedgeMult
		}
		if *hedgeFloor > 0 {
			d.HedgeFloor = host.Duration(*hedgeFloor)
		}
		if *hedgeCeiling > 0 {
			d.HedgeCeiling = host.Duration(*hedgeCeiling)
		}
	}
	if *ctl != "" {
		cfg.Control = *ctl
	}
	if *hostName != "" {
		cfg.Host = *hostName
	}
	if cfg.Host == "" {
		cfg.Host = host.DefaultName()
	}
	if err := host.CheckName(cfg.Host); err != nil {
		return usagef("--host: %v", err)
	}
	if *trace != "" {
		cfg.Trace = *trace
	}
	if *scenarioFile != "" {
		cfg.Scenario = *scenarioFile
	}
	if *metricsAddr != "" {
		cfg.Metrics = *metricsAddr
	}
	if *maxRequests != 0 {
		cfg.MaxRequests = *maxRequests
	}
	if *memLimit != "" {
		cfg.MemoryLimit = *memLimit
	}
	cfg.Scan = append(cfg.Scan, scans...)
	if *multiWriter {
		cfg.MultiWriter = true
	}
	for i := range cfg.Devices {
		cfg.Devices[i].MultiWriter = cfg.Devices[i].MultiWriter || cfg.MultiWriter
		if *lockSector != "" {
			cfg.Devices[i].LockSector = *lockSector
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	return serve(mountpoint, cfg, mountOptions{allowOther: *allowOther, debug: *debug, verify: *verify, configFile: *config}, stdout)
}

type mountOptions struct {
	allowOther, debug, verify bool
	// configFile is the --config file: claim-rule and SATP-rule changes
	// are written to it, and `adapter rescan` reads it again.
	configFile string
}

func stateDirOf(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("MPATHFS_STATE_DIR"); env != "" {
		return env
	}
	return defaultStateDir
}

func parseKV(list []string, flag string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want name=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// within reports whether p lies inside dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// serve mounts, serves until SIGINT/SIGTERM, and tears down in order.
func serve(mountpoint string, cfg *Config, mo mountOptions, stdout io.Writer) error {
	socket := control.SocketPath(cfg.Control)
	// Nothing the daemon itself writes may live inside its own mount: a
	// write there would wait for the daemon forever.
	for _, p := range []string{socket, cfg.Trace} {
		if p == "" {
			continue
		}
		if abs, _ := filepath.Abs(p); within(abs, mountpoint) {
			return usagef("%s lies inside the mountpoint %s: put it elsewhere", p, mountpoint)
		}
	}
	if err := fusedev.CleanStale(mountpoint); err != nil {
		return fmt.Errorf("mountpoint %s: %v", mountpoint, err)
	}
	st, err := os.Stat(mountpoint)
	if err != nil {
		if !os.IsNotExist(err) {
			return fmt.Errorf("mountpoint: %v", err)
		}
		if err := os.MkdirAll(mountpoint, 0o755); err != nil {
			return fmt.Errorf("mountpoint: %v", err)
		}
	} else if !st.IsDir() {
		return usagef("mountpoint %s is not a directory", mountpoint)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sc, err := loadMountScenario(cfg.Scenario)
	if err != nil {
		return err
	}
	claims, satpRules, err := host.Rules(cfg.ClaimRules, cfg.SATPRules)
	if err != nil {
		return err
	}
	if err := host.SetDefaultPSPs(satpRules, cfg.SATPDefaultPSP); err != nil {
		return err
	}
	hopts := host.Options{Name: cfg.Host, Events: &mpath.Events{}, Claims: claims, SATPRules: satpRules, Verify: mo.verify, Mountpoint: mountpoint, Scan: cfg.Scan}
	if mo.configFile != "" {
		if hopts.ConfigFile, err = filepath.Abs(mo.configFile); err != nil {
			return err
		}
		hopts.Sources = func(context.Context) ([]host.DeviceConfig, error) {
			c, err := LoadConfig(hopts.ConfigFile)
			if err != nil {
				return nil, err
			}
			return c.Devices, nil
		}
	}
	h := host.New(hopts)
	defer h.Close()
	// A lost LU lock is said on stderr as it happens (status and events
	// keep it too).
	lockEvents := hopts.Events.Subscribe(64)
	defer lockEvents.Close()
	go func() {
		for ev := range lockEvents.C {
			if ev.Kind == "lock-lost" {
				fmt.Fprintf(os.Stderr, "mpathfs: lock lost: %s\n", ev.Reason)
			}
		}
	}()
	if err := h.Build(ctx, cfg.Devices); err != nil {
		return err
	}
	for _, w := range h.LockWarnings() {
		fmt.Fprintf(os.Stderr, "mpathfs: warning: %s\n", w)
	}
	devices := h.Devices()
	if line := tuneProcs(devices); line != "" {
		fmt.Fprintf(stdout, "mpathfs: %s\n", line)
	}

	if cfg.Trace != "" {
		traceFile, err := createOutput(cfg.Trace, 0o600)
		if err != nil {
			return fmt.Errorf("trace: %v", err)
		}
		defer traceFile.Close()
		// One goroutine writes the file; the I/O path only queues its
		// record and drops it (counted) when the writer falls behind.
		t := nmp.NewAsyncTracer(nmp.AsyncTraceOptions{W: traceFile, OnDrop: func(n uint64) {
			fmt.Fprintf(stdout, "mpathfs: trace %s: %d records dropped so far (the writer falls behind the I/O)\n", cfg.Trace, n)
		}})
		defer func() {
			if err := t.Close(); err != nil {
				fmt.Fprintf(stdout, "mpathfs: trace %s: write error: %v\n", cfg.Trace, err)
			}
			if n := t.Dropped(); n > 0 {
				fmt.Fprintf(stdout, "mpathfs: trace %s: %d records dropped in all\n", cfg.Trace, n)
			}
		}()
		for _, d := range devices {
			d.SetTracer(t)
		}
	}

	rt := control.NewRuntime(mountpoint, h)
	if cfg.Metrics != "" {
		if err := serveMetrics(h, cfg.Metrics, stdout); err != nil {
			return err
		}
	}
	srv, err := control.Listen(socket, rt)
	if err != nil {
		return err
	}
	defer srv.Close()

	var devs []fusedev.Device
	for _, d := range h.Serve() {
		devs = append(devs, d)
	}
	fsrv, err := fusedev.Mount(mountpoint, devs, fusedev.Options{AllowOther: mo.allowOther, Debug: mo.debug, MaxRequests: cfg.MaxRequests})
	if err != nil {
		return fmt.Errorf("mount %s: %v", mountpoint, err)
	}
	// A device `adapter rescan` finds gets its file in the live mount.
	h.OnDevice(func(d host.IO) error { return fsrv.AddDevice(d) })
	if len(cfg.Scan) > 0 {
		// The block devices the globs match now are claimed at once.
		if res, err := h.Rescan(ctx, ""); err == nil {
			for _, d := range res.NewDevices {
				fmt.Fprintf(stdout, "mpathfs: scan: new device %s\n", d)
			}
			for _, e := range res.Errors {
				fmt.Fprintf(stdout, "mpathfs: scan: %s\n", e)
			}
		}
	}
	for _, d := range devices {
		st := d.Status()
		// The paths were probed once before the device was made: their
		// states are the checker's verdicts.
		paths := d.Paths()
		fmt.Fprintf(stdout, "mpathfs: serving %s (%s, %d paths: %s; %s + %s) at %s\n", d.Name(),
			humanize.IBytes(uint64(d.Size())), len(paths), mpath.StateSummary(paths), st.SATP, st.PSP, filepath.Join(mountpoint, d.Name()))
	}
	for _, m := range h.Masked() {
		fmt.Fprintf(stdout, "mpathfs: not claimed by NMP: %s\n", m)
	}
	for _, n := range h.Notes() {
		fmt.Fprintf(stdout, "mpathfs: identity: %s\n", n)
	}
	if line := applyMemoryLimit(cfg.MemoryLimit, cfg.MaxRequests); line != "" {
		fmt.Fprintf(stdout, "mpathfs: %s\n", line)
	}
	fmt.Fprintf(stdout, "mpathfs: control socket %s; stop with Ctrl-C or SIGTERM\n", socket)
	if len(devices) > 0 {
		fmt.Fprintf(stdout, "mpathfs: try: fio --name=t --filename=%s --direct=1 --rw=randrw --bs=4k --iodepth=16 --ioengine=libaio --runtime=30 --time_based --verify=crc32c --verify_backlog=1024\n",
			filepath.Join(mountpoint, devices[0].Name()))
	}
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	h.WatchHotplug(ctx, stdout)
	if sc != nil {
		playMountScenario(ctx, rt, sc, cfg.Scenario, stdout)
	}

	served := make(chan struct{})
	go func() { fsrv.Wait(); close(served) }()
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "mpathfs: stopping: unmounting", mountpoint)
	case <-served:
		fmt.Fprintln(stdout, "mpathfs: the mount went away (unmounted from outside); stopping")
	}
	stop() // a second signal now kills the process the default way
	done := make(chan error, 1)
	go func() { done <- fsrv.Unmount() }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		err = fmt.Errorf("unmount of %s did not finish in 15s", mountpoint)
	}
	if err != nil {
		return fmt.Errorf("unmount: %v", err)
	}
	return nil
}

package iscsi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/leakcheck"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const targetName = "iqn.2026-01.org.mpathfs:test"

// testTarget is a target over a RAM disk, listening on 127.0.0.1.
type testTarget struct {
	*iscsi.Target
	ram  *iscsitest.RAM
	addr string
	logs *logBuf
}

type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// startTarget serves a target on a free port; cleanup closes it and waits.
func startTarget(t *testing.T, cfg iscsi.TargetConfig, ram *iscsitest.RAM) *testTarget {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = targetName
	}
	if ram == nil {
		ram = iscsitest.NewRAM(2, 2048, 512)
	}
	logs := &logBuf{}
	cfg.Logf = logs.logf
	tgt, err := iscsi.NewTarget(cfg, ram)
	require.NoError(t, err)
	return serveTarget(t, tgt, ram, logs)
}

// serveTarget serves tgt on a free port of 127.0.0.1 until the test ends.
func serveTarget(t *testing.T, tgt *iscsi.Target, ram *iscsitest.RAM, logs *logBuf) *testTarget {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- tgt.Serve(l, iscsi.Portal{TPGT: 1, RelativePort: 1, TPG: 1}) }()
	t.Cleanup(func() {
		require.NoError(t, tgt.Close())
		require.ErrorIs(t, <-done, iscsi.ErrTargetClosed)
		if t.Failed() {
			t.Logf("target log:\n%s", logs)
		}
	})
	return &testTarget{Target: tgt, ram: ram, addr: l.Addr().String(), logs: logs}
}

func (tt *testTarget) url(lun int, userinfo string) string {
	if userinfo != "" {
		userinfo += "@"
	}
	return fmt.Sprintf("iscsi://%s%s/%s/%d", userinfo, tt.addr, targetName, lun)
}

// runTool runs a program with a deadline and returns its combined output.
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("%s did not finish within %v", name, timeout))
	}
	return string(out), err
}

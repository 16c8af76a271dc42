package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The APD timeout, failback and no_path_retry are checked alike by the
// config file, the mount flags and (in nmp) policy set: 0 and negative
// APD timeouts are errors that name the fix, never a silent 140 s.
func TestPolicyConfigChecks(t *testing.T) {
	dev := func(extra string) []byte {
		return []byte("devices:\n  - name: d0\n    paths:\n      - uri: file:///tmp/x\n" + extra)
	}
	for _, tc := range []struct {
		extra string
		want  []string // nil: accepted
	}{
		{"    apd_timeout: 0s\n", []string{"apd_timeout 0s", "no_path_retry fail"}},
		{"    apd_timeout: -5s\n", []string{"negative"}},
		{"    apd_timeout: 30s\n    failback: manual\n    no_path_retry: queue\n    marginal_errors: 5\n    marginal_window: 30s\n", nil},
		{"    failback: 15\n    no_path_retry: 12\n", nil},
		{"    failback: sometimes\n", []string{`failback "sometimes"`, "immediate, manual, followover"}},
		{"    failback: 0\n", []string{`failback "0"`}},
		{"    no_path_retry: 0\n", []string{`no_path_retry "0"`, "write fail"}},
		{"    no_path_retry: forever\n", []string{`no_path_retry "forever"`, "queue, fail"}},
		{"    marginal_errors: -1\n", []string{"marginal_errors -1"}},
	} {
		c, err := ParseConfig("test.yaml", dev(tc.extra))
		if tc.want == nil {
			require.NoError(t, err, tc.extra)
			require.NotNil(t, c)
			continue
		}
		require.Error(t, err, tc.extra)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, tc.extra)
		}
	}
}

func TestMountPolicyFlagsChecked(t *testing.T) {
	mp := filepath.Join(t.TempDir(), "mnt")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--apd-timeout", "0s"}, "--apd-timeout: apd_timeout 0s"},
		{[]string{"--apd-timeout", "-1s"}, "--apd-timeout: apd_timeout -1s"},
		{[]string{"--failback", "later"}, `--failback: failback "later"`},
		{[]string{"--no-path-retry", "-3"}, `--no-path-retry: no_path_retry "-3"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append(append([]string{"mount", "--path", "/tmp/none"}, tc.args...), mp), &stdout, &stderr)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, stderr.String(), tc.want, "%v", tc.args)
	}
}

func TestQueueAndSwitchUsage(t *testing.T) {
	t.Setenv("MPATHFS_CONTROL", "/nonexistent/mpathfs-policy-test.sock")
	for _, args := range [][]string{{"queue"}, {"queue", "sideways", "d0"}, {"queue", "on"}, {"path", "switch"}, {"path", "switch", "a", "b"}} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, run(args, &stdout, &stderr), "%v", args)
		assert.NotEmpty(t, stderr.String(), "%v", args)
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"policy", "set", "-h"}, &stdout, &stderr))
	for _, f := range []string{"--failback", "--no-path-retry", "--apd-timeout", "--type", "--sampling-cycles", "--latency-eval-time"} {
		assert.Contains(t, stdout.String(), f)
	}
}

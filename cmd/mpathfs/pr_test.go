package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/scsi"
)

// Bad `pr` invocations are refused before any socket is dialled, with a
// message that says what to give.
func TestPRUsageErrors(t *testing.T) {
	t.Setenv("MPATHFS_CONTROL", "/nonexistent/mpathfs-pr-test.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pr", "d0"}, "exactly one verb"},
		{[]string{"pr", "--register", "--reserve", "d0"}, "exactly one verb"},
		{[]string{"pr", "--register", "d0"}, "--param-sark"},
		{[]string{"pr", "--reserve", "--param-rk", "0xa", "d0"}, "--prout-type"},
		{[]string{"pr", "--reserve", "--param-rk", "0xa", "--prout-type", "XX", "d0"}, "WERO"},
		{[]string{"pr", "--reserve", "--param-rk", "0xa", "--prout-type", "2", "d0"}, "want 1 (WE)"},
		{[]string{"pr", "--register", "--param-sark", "zz", "d0"}, "64-bit number"},
		{[]string{"pr", "--preempt", "--param-rk", "1", "--prout-type", "WE", "d0"}, "victim"},
		{[]string{"pr", "--read-keys"}, "exactly one DEVICE"},
		{[]string{"pr", "reserve6"}, "exactly one DEVICE"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		assert.Equal(t, 2, code, "%v: %s", tc.args, stderr.String())
		assert.Contains(t, stderr.String(), tc.want, "%v", tc.args)
	}
}

func TestParsePRTypeAndKey(t *testing.T) {
	for s, want := range map[string]scsi.PRType{"WE": 1, "ea": 3, "WERO": 5, "6": 6, "7": 7, "EAAR": 8, "0x5": 5} {
		got, err := control.ParsePRType(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, got, s)
	}
	k, err := control.ParsePRKey("0x123abc")
	require.NoError(t, err)
	assert.Equal(t, uint64(0x123abc), k)
}

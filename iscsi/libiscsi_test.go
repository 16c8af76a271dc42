package iscsi_test

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
	"github.com/mpathfs/mpathfs/scsi"
)

// Tests against libiscsi's programs (Debian libiscsi-bin): an initiator
// nobody here wrote.

const initiatorName = "iqn.2026-01.org.mpathfs:initiator"

func TestLibiscsiDiscovery(t *testing.T) {
	needs.Tools(t, "iscsi-ls")
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	out, err := runTool(t, 30*time.Second, "iscsi-ls", "-s", "-i", initiatorName, "iscsi://"+tt.addr)
	require.NoError(t, err, out)
	assert.Contains(t, out, "Target:"+targetName)
	assert.Contains(t, out, tt.addr)
	assert.Regexp(t, `Lun:0 .*Type:DIRECT_ACCESS`, out)
	assert.Regexp(t, `Lun:1 `, out)
}

func TestLibiscsiInquiryAndCapacity(t *testing.T) {
	needs.Tools(t, "iscsi-inq")
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	out, err := runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, ""))
	require.NoError(t, err, out)
	assert.Contains(t, out, "MPATHFS")
	out, err = runTool(t, 30*time.Second, "iscsi-readcapacity16", "-i", initiatorName, tt.url(1, ""))
	require.NoError(t, err, out)
	assert.Contains(t, out, "LOGICAL BLOCK LENGTH IN BYTES:512")
	assert.Contains(t, out, "Total size:1048576")
}

func TestLibiscsiCHAP(t *testing.T) {
	needs.Tools(t, "iscsi-inq")
	cfg := iscsi.TargetConfig{CHAP: map[string]iscsi.CHAPSecret{
		initiatorName: {User: "alice", Secret: "alice-secret-12", TargetUser: "array", TargetSecret: "array-secret-12"},
	}}
	tt := startTarget(t, cfg, nil)
	out, err := runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, "alice%alice-secret-12"))
	require.NoError(t, err, "one-way CHAP: %s", out)
	assert.Contains(t, out, "MPATHFS")

	out, err = runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, "alice%alice-secret-12")+
		"?target_user=array&target_password=array-secret-12")
	require.NoError(t, err, "mutual CHAP: %s", out)

	out, err = runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, "alice%wrong-secret"))
	require.Error(t, err, "a wrong secret must fail the login: %s", out)
	out, err = runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, ""))
	require.Error(t, err, "an initiator with a CHAP secret must authenticate: %s", out)
	assert.Contains(t, tt.logs.String(), "CHAP")

	// Another initiator, without a secret, logs in without authentication.
	out, err = runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName+"-2", tt.url(0, ""))
	require.NoError(t, err, out)
}

// libiscsi offers HeaderDigest=None,CRC32C; a target that requires
// digests picks CRC32C, one that does not picks None. The RAM disk's hook
// reads the session's parameters while a command of that session runs,
// and the command (INQUIRY, with data) crosses the wire with the digest.
func TestLibiscsiDigests(t *testing.T) {
	needs.Tools(t, "iscsi-inq")
	ram := iscsitest.NewRAM(1, 2048, 512)
	// The hook and what it shares are set up before the target runs:
	// the commands reach the hook through another process, which the
	// race detector cannot see as ordering.
	var mu sync.Mutex
	var seen []iscsi.Params
	var cur *testTarget
	ram.Hook = func(_ context.Context, cmd *scsi.Command) *scsi.Response {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range cur.Sessions() {
			if s.Nexus == cmd.Nexus {
				seen = append(seen, s.Params)
			}
		}
		return nil
	}
	tt := startTarget(t, iscsi.TargetConfig{RequireHeaderDigest: true}, ram)
	mu.Lock()
	cur = tt
	mu.Unlock()
	last := func() iscsi.Params {
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, seen)
		return seen[len(seen)-1]
	}
	out, err := runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, tt.url(0, ""))
	require.NoError(t, err, out)
	assert.Contains(t, out, "MPATHFS")
	assert.True(t, last().HeaderDigest, "HeaderDigest=CRC32C")

	plain := startTarget(t, iscsi.TargetConfig{}, ram)
	mu.Lock()
	seen, cur = nil, plain
	mu.Unlock()
	out, err = runTool(t, 30*time.Second, "iscsi-inq", "-i", initiatorName, plain.url(0, ""))
	require.NoError(t, err, out)
	assert.False(t, last().HeaderDigest, "HeaderDigest=None, the initiator's first choice")
}

// testCU runs iscsi-test-cu tests and returns the number that passed; it
// fails the test on any failed one.
func testCU(t *testing.T, tt *testTarget, tests string, extra ...string) int {
	t.Helper()
	args := append([]string{"-d", "-n", "-i", initiatorName, "-t", tests}, extra...)
	args = append(args, tt.url(0, ""))
	out, err := runTool(t, 5*time.Minute, "iscsi-test-cu", args...)
	t.Logf("iscsi-test-cu -t %s:\n%s", tests, out)
	require.NoError(t, err, "iscsi-test-cu exits 0 when every test passed")
	m := regexp.MustCompile(`tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, "no run summary in the output")
	assert.Equal(t, "0", m[4], "failed tests")
	assert.Equal(t, m[2], m[3], "every test that ran passed")
	passed, err := strconv.Atoi(m[3])
	require.NoError(t, err)
	require.Positive(t, passed, "some test ran")
	return passed
}

// The transport families of libiscsi's conformance suite: CmdSN window,
// DataSN checks, residual overflow/underflow, task management.
func TestLibiscsiConformanceTransport(t *testing.T) {
	needs.Tools(t, "iscsi-test-cu")
	for _, family := range []string{"iSCSI.iSCSIcmdsn", "iSCSI.iSCSIdatasn", "iSCSI.iSCSIResiduals", "iSCSI.iSCSITMF"} {
		t.Run(family, func(t *testing.T) {
			tt := startTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{NOPInterval: -1}}, nil)
			n := testCU(t, tt, family)
			t.Logf("%s: %d tests passed", family, n)
		})
	}
}

// A write and a read through libiscsi land on and come from the RAM disk.
func TestLibiscsiReadWriteRoundTrip(t *testing.T) {
	needs.Tools(t, "iscsi-test-cu")
	ram := iscsitest.NewRAM(1, 4096, 512)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	testCU(t, tt, "SCSI.Write10.Simple")
	disk := ram.Disk(0)
	assert.False(t, bytes.Equal(disk, make([]byte, len(disk))), "the writes reached the disk")
	testCU(t, tt, "SCSI.Read10.Simple")
	testCU(t, tt, "SCSI.Read16.Simple")
	testCU(t, tt, "SCSI.Write16.Simple")
	assert.False(t, strings.Contains(tt.logs.String(), "protocol error"), tt.logs.String())
}

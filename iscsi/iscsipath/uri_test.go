package iscsipath

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseURI(t *testing.T) {
	u, err := url.Parse("iscsi://127.0.0.1:3261/iqn.2026-01.org.example:disk1/2?initiator=iqn.2026-01.org.example:host-a&chap_user=alice&chap_secret=s3cret&header_digest=crc32c&data_digest=CRC32C&isid=c00000000001&timeout=2s&login_timeout=3s&max_xfer=65536")
	require.NoError(t, err)
	o, err := ParseURI(u)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:3261", o.Session.Address)
	require.Equal(t, "iqn.2026-01.org.example:disk1", o.Session.TargetName)
	require.Equal(t, uint64(2), o.LUN)
	require.Equal(t, "iqn.2026-01.org.example:host-a", o.Session.InitiatorName)
	require.Equal(t, "alice", o.Session.CHAPUser)
	require.Equal(t, "s3cret", o.Session.CHAPSecret)
	require.True(t, o.Session.HeaderDigest)
	require.True(t, o.Session.DataDigest)
	require.Equal(t, [6]byte{0xc0, 0, 0, 0, 0, 1}, o.Session.ISID)
	require.Equal(t, 2*time.Second, o.Timeout)
	require.Equal(t, 3*time.Second, o.Session.LoginTimeout)
	require.Equal(t, 65536, o.MaxTransfer)
	require.NotContains(t, o.Name, "s3cret", "the secret must not appear in messages")

	u, _ = url.Parse("iscsi://example.org/iqn.2026-01.org.example:disk1/0")
	o, err = ParseURI(u)
	require.NoError(t, err)
	require.Equal(t, "example.org:3260", o.Session.Address)
	require.Equal(t, DefaultInitiator, o.Session.InitiatorName)
	require.False(t, o.Session.HeaderDigest)
}

func TestParseURIErrors(t *testing.T) {
	for _, c := range []struct{ uri, want string }{
		{"iscsi:///iqn.2026-01.org.example:d/0", "no host"},
		{"iscsi://h:0/iqn.2026-01.org.example:d/0", "bad port"},
		{"iscsi://h/iqn.2026-01.org.example:d", "/TARGET-IQN/LUN"},
		{"iscsi://h/iqn.2026-01.org.example:d/0/1", "/TARGET-IQN/LUN"},
		{"iscsi://h/disk1/0", "must start with iqn."},
		{"iscsi://h/iqn.2026-01.org.example:d/x", "LUN \"x\""},
		{"iscsi://h/iqn.2026-01.org.example:d/70000", "LUN"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?chap_user=a", "both chap_user= and chap_secret="},
		{"iscsi://h/iqn.2026-01.org.example:d/0?mutual_user=a&mutual_secret=b", "needs CHAP"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?header_digest=md5", "want crc32c or none"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?isid=12", "12 hex digits"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?timeout=-1s", "positive duration"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?max_xfer=12", "byte count"},
		{"iscsi://h/iqn.2026-01.org.example:d/0?colour=red", "unknown query parameter \"colour\""},
		{"iscsi://h/iqn.2026-01.org.example:d/0?initiator=bob", "initiator="},
		{"iscsi://u:p@h/iqn.2026-01.org.example:d/0", "chap_user="},
	} {
		u, err := url.Parse(c.uri)
		require.NoError(t, err)
		_, err = ParseURI(u)
		require.ErrorContains(t, err, c.want, c.uri)
	}
}

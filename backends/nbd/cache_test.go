package nbd

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheDomain: two paths to one multi-conn server name one cache
// domain; another server over the same file names another; a server
// without NBD_FLAG_CAN_MULTI_CONN names none.
func TestCacheDomain(t *testing.T) {
	disk := sparseFile(t, 4<<20)
	s := startNbdkit(t, false, "file", disk)
	a, b := openT(t, s.uri("")), openT(t, s.uri(""))
	defer a.Close()
	defer b.Close()
	require.NotEmpty(t, a.CacheDomain())
	assert.Equal(t, a.CacheDomain(), b.CacheDomain())
	s2 := startNbdkit(t, false, "file", disk)
	other := openT(t, s2.uri(""))
	defer other.Close()
	assert.NotEqual(t, a.CacheDomain(), other.CacheDomain(), "another server over the same file")
	s3 := startNbdkit(t, false, "--filter=multi-conn", "file", disk, "multi-conn-mode=disable")
	single := openT(t, s3.uri(""))
	defer single.Close()
	assert.Empty(t, single.CacheDomain(), "no multi-conn: no promise")
}

// TestCacheDomainDeclared: `cache=NAME` in the URI is the operator's word
// that servers share one cache; it wins over the multi-conn rule, and an
// empty name is refused.
func TestCacheDomainDeclared(t *testing.T) {
	disk := sparseFile(t, 4<<20)
	s1 := startNbdkit(t, false, "file", disk)
	s2 := startNbdkit(t, false, "--filter=multi-conn", "file", disk, "multi-conn-mode=disable")
	a, b := openT(t, withParam(s1.uri(""), "cache=img")), openT(t, withParam(s2.uri(""), "cache=img"))
	defer a.Close()
	defer b.Close()
	assert.Equal(t, "declared:img", a.CacheDomain())
	assert.Equal(t, a.CacheDomain(), b.CacheDomain(), "two servers declared to share one cache")
	u, err := url.Parse(withParam(s1.uri(""), "cache="))
	require.NoError(t, err)
	_, err = ParseURI(u)
	require.ErrorContains(t, err, "cache= needs a name")
}

// withParam adds one query parameter to a URI that may already have some.
func withParam(uri, kv string) string {
	if strings.Contains(uri, "?") {
		return uri + "&" + kv
	}
	return uri + "?" + kv
}

package nbd

import "github.com/mpathfs/mpathfs/backends"

var _ backends.CacheSharer = (*Client)(nil)

// CacheDomain names the server's cache when a flush on one connection is
// known to cover writes completed on others: the NBD protocol promises
// that only for connections to the same export of the same server, and
// only when the server advertises NBD_FLAG_CAN_MULTI_CONN. Paths to the
// same socket or host:port and export (spelled the same way) then cover
// each other's flushes; different servers, or no multi-conn, never do
// (the empty domain).
//
// An operator's declaration (URI `cache=NAME`, Options.CacheDomain) wins:
// paths declaring the same name cover each other's flushes.
func (cl *Client) CacheDomain() string {
	if cl.opts.CacheDomain != "" {
		return "declared:" + cl.opts.CacheDomain
	}
	if !cl.MultiConn() {
		return ""
	}
	return "nbd:" + cl.opts.Network + ":" + cl.opts.Address + "/" + cl.opts.Export
}

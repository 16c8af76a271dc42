package control

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

// ListenHandler serves h on a Unix socket at path with everything Listen
// gives a mount's API — the socket made mode 0600 before anyone can reach
// it, a stale socket replaced and a live one refused, every caller's
// SO_PEERCRED checked (root and the daemon's user only) — for a server
// with routes of its own (the array server, package arrayd). A request no
// route of h takes should be answered with ReplyError and
// ErrUnknownEndpoint, as a mount's API does.
func ListenHandler(path string, h http.Handler) (*Server, error) {
	if h == nil {
		return nil, fmt.Errorf("control socket %s: no handler", path)
	}
	ln, id, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, path: path, id: id, owner: uint32(os.Geteuid())}
	s.srv = &http.Server{
		Handler:           s.guard(h),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       peerContext,
	}
	go s.srv.Serve(ln)
	return s, nil
}

// Package freezeproxy is a test proxy between a client and a server that a
// test can freeze: a frozen connection forwards nothing in either direction
// — requests, replies, a half-close — and closes nothing until the test
// ends, as a network that swallows everything does. It is how tests make a
// request that is neither answered nor refused, so that only an operator's
// fence can end the client's doubt.
package freezeproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections from its listening address to a target.
type Proxy struct {
	ln  net.Listener
	mu  sync.Mutex
	gen chan struct{} // closed when the connections of this generation freeze
}

// Start listens on network/addr ("tcp", "127.0.0.1:0" or "unix", a socket
// path) and forwards every connection to target on the same network. Every
// connection and goroutine ends with the test.
func Start(t testing.TB, network, addr, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("freezeproxy: %v", err)
	}
	p := &Proxy{ln: ln, gen: make(chan struct{})}
	end := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(end); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { <-end; c.Close() })
			p.mu.Lock()
			gen := p.gen
			p.mu.Unlock()
			if closed(gen) {
				continue // accepted while frozen: never answered
			}
			s, err := net.Dial(network, target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() { <-end; s.Close() })
			wg.Go(func() { pipe(c, s, gen, end) })
			wg.Go(func() { pipe(s, c, gen, end) })
		}
	})
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze freezes every connection made so far; connections made while
// frozen are accepted and never answered.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !closed(p.gen) {
		close(p.gen)
	}
}

// Thaw forwards the connections made from now on (the frozen ones stay
// frozen).
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if closed(p.gen) {
		p.gen = make(chan struct{})
	}
}

// FreezeExisting freezes the connections made so far and keeps forwarding
// new ones: Freeze then Thaw.
func (p *Proxy) FreezeExisting() {
	p.Freeze()
	p.Thaw()
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pipe copies src to dst (and a half-close) until frozen; then it swallows
// what it read and waits for the test's end.
func pipe(src, dst net.Conn, frozen, end <-chan struct{}) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if closed(frozen) {
			<-end
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}
			return
		}
	}
}

package control

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shortDir returns a temporary directory with a short path: a Unix
// socket's path must fit in 108 bytes, and t.TempDir's names are long.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mpc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func listen(t *testing.T, path string) *Server {
	t.Helper()
	s, err := Listen(path, NewRuntime("/nowhere", nil))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestListenSocketMode(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "sub", "c.sock")
	s := listen(t, sock)
	fi, err := os.Lstat(sock)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket, fi.Mode().Type())
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm(), "socket mode")
	di, err := os.Stat(filepath.Dir(sock))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), di.Mode().Perm(), "a created parent directory lets others reach the socket (to be refused by it)")
	// The private directory the socket was born in is gone.
	ents, err := os.ReadDir(filepath.Dir(sock))
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "c.sock", ents[0].Name())

	c, err := Dial(sock)
	require.NoError(t, err)
	_, err = c.Status(context.Background())
	require.NoError(t, err, "root / the owner is served")

	require.NoError(t, s.Close())
	_, err = os.Lstat(sock)
	assert.ErrorIs(t, err, fs.ErrNotExist, "Close removes the socket")
}

func TestListenRefusesRegularFile(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	require.NoError(t, os.WriteFile(p, []byte("precious"), 0o644))
	_, err := Listen(p, NewRuntime("/nowhere", nil))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotSocket)
	assert.Contains(t, err.Error(), p, "the error names the path")
	b, rerr := os.ReadFile(p)
	require.NoError(t, rerr)
	assert.Equal(t, "precious", string(b), "the file is intact")
}

func TestListenRefusesSymlinkAndDir(t *testing.T) {
	dir := shortDir(t)
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("x"), 0o644))
	link := filepath.Join(dir, "link.sock")
	require.NoError(t, os.Symlink(target, link))
	_, err := Listen(link, NewRuntime("/nowhere", nil))
	assert.ErrorIs(t, err, ErrNotSocket)
	_, err = os.Lstat(link)
	assert.NoError(t, err, "the symlink is intact")

	sub := filepath.Join(dir, "d.sock")
	require.NoError(t, os.Mkdir(sub, 0o755))
	_, err = Listen(sub, NewRuntime("/nowhere", nil))
	assert.ErrorIs(t, err, ErrNotSocket)
}

func TestListenRefusesLiveSocket(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	listen(t, p)
	_, err := Listen(p, NewRuntime("/nowhere", nil))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrSocketInUse)
	// The first server still answers.
	c, err := Dial(p)
	require.NoError(t, err)
	_, err = c.Status(context.Background())
	assert.NoError(t, err)
}

func TestListenReplacesStaleSocket(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	// A socket nobody listens on any more: bound, then closed without
	// unlinking (what a crash leaves).
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	require.Equal(t, fs.ModeSocket, fi.Mode().Type())

	listen(t, p)
	c, err := Dial(p)
	require.NoError(t, err)
	_, err = c.Status(context.Background())
	assert.NoError(t, err)
}

func TestCloseLeavesAReplacement(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	s := listen(t, p)
	// Someone replaced the socket (e.g. removed it and put a file there).
	require.NoError(t, os.Remove(p))
	require.NoError(t, os.WriteFile(p, []byte("other"), 0o600))
	require.NoError(t, s.Close())
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "other", string(b))
}

func TestPeerCredentialCheck(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	s := listen(t, p)
	assert.True(t, s.allowed(0), "root")
	assert.True(t, s.allowed(uint32(os.Geteuid())), "the daemon's user")
	assert.False(t, s.allowed(uint32(os.Geteuid())+12345), "another user")

	// This process is root or the owner: served.
	hc := unixHTTP(p)
	resp, err := hc.Get("http://x/v1/status")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// The same connection path as a foreign user would take (the e2e
	// test does it with a real other user): every endpoint refuses with a
	// 403 and a message.
	deny := func(uint32) bool { return false }
	s.allow.Store(&deny)
	for _, u := range []string{"/v1/status", "/debug/pprof/", "/v1/trace?device=x", "/nope"} {
		resp, err := hc.Get("http://x" + u)
		require.NoError(t, err)
		var e ErrorReply
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, u)
		assert.Contains(t, e.Error, "permission denied for uid", u)
	}
	c, err := Dial(p)
	require.NoError(t, err)
	_, err = c.Status(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied for uid")
}

func unixHTTP(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func TestEndpointEscaping(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "c.sock")
	type echo struct{ Device, Path, Name string }
	echoMux := http.NewServeMux()
	echoMux.HandleFunc("GET /v1/echo", func(w http.ResponseWriter, req *http.Request) {
		Reply(w, echo{Device: req.URL.Query().Get("device"), Path: req.URL.Query().Get("path")})
	})
	ln, err := net.Listen("unix", p)
	require.NoError(t, err)
	srv := &http.Server{Handler: echoMux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := Dial(p)
	require.NoError(t, err)
	for _, name := range []string{"a b/c?d", "x&device=y", "100%", "#frag", "ü+é", ""} {
		var got echo
		require.NoError(t, c.Get(context.Background(), Endpoint("/v1/echo", "device", name, "path", name+"!"), &got))
		assert.Equal(t, name, got.Device)
		assert.Equal(t, name+"!", got.Path)
	}
	// Path segments: a route with a wildcard gets the segment back whole.
	assert.Equal(t, "/v1/x/a%20b%2Fc%3Fd", EndpointPath("/v1/x", "a b/c?d"))
	mux := http.NewServeMux()
	var got string
	mux.HandleFunc("GET /v1/x/{name}", func(w http.ResponseWriter, req *http.Request) { got = req.PathValue("name") })
	req, err := http.NewRequest(http.MethodGet, "http://x"+EndpointPath("/v1/x", "a b/c?d"), nil)
	require.NoError(t, err)
	mux.ServeHTTP(new(discardResponse), req)
	assert.Equal(t, "a b/c?d", got)
	assert.Equal(t, "/v1/status", Endpoint("/v1/status"))
}

type discardResponse struct{ h http.Header }

func (d *discardResponse) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardResponse) WriteHeader(int)             {}

func TestClearStaleErrors(t *testing.T) {
	dir := shortDir(t)
	assert.NoError(t, clearStale(filepath.Join(dir, "missing")))
	f := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	err := clearStale(f)
	assert.True(t, errors.Is(err, ErrNotSocket))
	assert.Contains(t, err.Error(), "a regular file")
}

// TestListenLongPath: a socket path that fits sun_path works even when
// the private directory it is born in would make the path too long.
func TestListenLongPath(t *testing.T) {
	dir := shortDir(t)
	// dir + "/" + name = 107 bytes: the longest that fits.
	name := strings.Repeat("x", 107-len(dir)-1)
	p := filepath.Join(dir, name)
	require.Len(t, p, 107)
	s := listen(t, p)
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	c, err := Dial(s.Path())
	require.NoError(t, err)
	_, err = c.Status(context.Background())
	assert.NoError(t, err)
}

// TestListenRefusesOpenDirectory: a directory anyone may write to without
// the sticky bit lets anyone swap the socket: refused; with the sticky
// bit (like /tmp) it is fine.
func TestListenRefusesOpenDirectory(t *testing.T) {
	dir := shortDir(t)
	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o755))
	require.NoError(t, os.Chmod(open, 0o777))
	_, err := Listen(filepath.Join(open, "c.sock"), NewRuntime("/nowhere", nil))
	assert.ErrorIs(t, err, ErrOpenDir)

	require.NoError(t, os.Chmod(open, 0o777|os.ModeSticky))
	listen(t, filepath.Join(open, "c.sock"))
}

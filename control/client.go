package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// Client talks to a running mount's control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// Dial returns a client for the socket; it checks the socket exists.
func Dial(socket string) (*Client, error) {
	if _, err := os.Stat(socket); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("control socket %s: permission denied (a directory on the way is closed to you): only root and the user who started the mount may use it", socket)
		}
		return nil, fmt.Errorf("no mpathfs control socket at %s: is `mpathfs mount` running? (give --control PATH or set MPATHFS_CONTROL)", socket)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mpathfs"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e ErrorReply
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control socket %s: %s", c.socket, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Get calls a GET endpoint.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// Post calls a POST endpoint.
func (c *Client) Post(ctx context.Context, path string, body, out any) error {
	return c.do(ctx, http.MethodPost, path, body, out)
}

// Status returns the topology.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Get(ctx, "/v1/status", &st)
	return st, err
}

// Stream calls a streaming endpoint and hands each JSON line to fn until fn
// returns false, the stream ends or ctx is done.
func (c *Client) Stream(ctx context.Context, path string, fn func(line []byte) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://mpathfs"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.dialErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e ErrorReply
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control socket %s: %s", c.socket, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if !fn(sc.Bytes()) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// dialErr words a failed request: a socket whose mode keeps the caller
// out says who may use it.
func (c *Client) dialErr(err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("control socket %s: permission denied: only root and the user who started the mount may use it", c.socket)
	}
	return fmt.Errorf("control socket %s: %w", c.socket, err)
}

// Endpoint builds a request path for Get, Post and Stream: the endpoint
// (fixed text such as "/v1/trace") followed by query parameters given as
// name, value pairs. Values are escaped, so a device or path name with
// spaces, '/', '?', '&' or '%' reaches the server unchanged. A trailing
// name without a value is ignored.
func Endpoint(endpoint string, params ...string) string {
	if len(params) < 2 {
		return endpoint
	}
	q := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		q.Add(params[i], params[i+1])
	}
	return endpoint + "?" + q.Encode()
}

// EndpointPath joins an endpoint and path segments taken from user input,
// each escaped as one segment (url.PathEscape), for routes with wildcards
// such as "GET /v1/x/{name}".
func EndpointPath(endpoint string, segments ...string) string {
	for _, s := range segments {
		endpoint += "/" + url.PathEscape(s)
	}
	return endpoint
}

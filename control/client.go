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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/integrity"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
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
		return c.replyErr(resp)
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

// replyErr is the error of a non-2xx reply: an *Error with the server's
// message and code.
func (c *Client) replyErr(resp *http.Response) error {
	var e ErrorReply
	if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
		return &Error{Code: e.Code, Message: e.Error}
	}
	return fmt.Errorf("control socket %s: %s", c.socket, resp.Status)
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
		return c.replyErr(resp)
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

// call calls a route of api.go with query parameters (name, value pairs,
// as Endpoint takes them) and a body (nil for none).
func (c *Client) call(ctx context.Context, route string, body, out any, params ...string) error {
	method, path, _ := strings.Cut(route, " ")
	return c.do(ctx, method, Endpoint(path, params...), body, out)
}

// Status returns the topology.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.call(ctx, RouteStatus, nil, &st)
	return st, err
}

// PathAdmin switches a path on or off and sets its MRU rank.
func (c *Client) PathAdmin(ctx context.Context, r PathAdminRequest) (mpath.PathStatus, error) {
	var ps mpath.PathStatus
	err := c.call(ctx, RoutePathAdmin, r, &ps)
	return ps, err
}

// PathFence confirms a path dead.
func (c *Client) PathFence(ctx context.Context, path string) (PathFenceReply, error) {
	var r PathFenceReply
	err := c.call(ctx, RoutePathFence, PathFenceRequest{Path: path}, &r)
	return r, err
}

// PathAdd joins a path to a running device.
func (c *Client) PathAdd(ctx context.Context, r PathAddRequest) (mpath.PathStatus, error) {
	var ps mpath.PathStatus
	err := c.call(ctx, RoutePathAdd, r, &ps)
	return ps, err
}

// PathRemove takes a path out of its running device.
func (c *Client) PathRemove(ctx context.Context, r PathRemoveRequest) (host.PathRemoval, error) {
	var rep host.PathRemoval
	err := c.call(ctx, RoutePathRemove, r, &rep)
	return rep, err
}

// Adapters lists the adapters the paths run through.
func (c *Client) Adapters(ctx context.Context) (AdaptersReply, error) {
	var rep AdaptersReply
	err := c.call(ctx, RouteAdapters, nil, &rep)
	return rep, err
}

// Adapter fails, restores or resets an adapter.
func (c *Client) Adapter(ctx context.Context, r AdapterRequest) (host.AdapterStatus, error) {
	var st host.AdapterStatus
	err := c.call(ctx, RouteAdapter, r, &st)
	return st, err
}

// InjectFault injects a fault on a path.
func (c *Client) InjectFault(ctx context.Context, r FaultInjectRequest) (FaultInjectReply, error) {
	var rep FaultInjectReply
	err := c.call(ctx, RouteFaultInject, r, &rep)
	return rep, err
}

// ClearFault clears a fault of a path (ID 0: every fault of the path).
func (c *Client) ClearFault(ctx context.Context, r FaultClearRequest) (FaultClearReply, error) {
	var rep FaultClearReply
	err := c.call(ctx, RouteFaultClear, r, &rep)
	return rep, err
}

// FaultList lists the active faults.
func (c *Client) FaultList(ctx context.Context) (FaultListReply, error) {
	var rep FaultListReply
	err := c.call(ctx, RouteFaultList, nil, &rep)
	return rep, err
}

// Policy changes a device's PSP.
func (c *Client) Policy(ctx context.Context, r PolicyRequest) (mpath.DeviceStatus, error) {
	var st mpath.DeviceStatus
	err := c.call(ctx, RoutePolicy, r, &st)
	return st, err
}

// Plugins lists the mount's plugins.
func (c *Client) Plugins(ctx context.Context) (Plugins, error) {
	var pl Plugins
	err := c.call(ctx, RoutePlugins, nil, &pl)
	return pl, err
}

// Arrays returns the status of the simulated arrays.
func (c *Client) Arrays(ctx context.Context) (ArraysReply, error) {
	var rep ArraysReply
	err := c.call(ctx, RouteArrays, nil, &rep)
	return rep, err
}

// Array sends a command to a simulated array.
func (c *Client) Array(ctx context.Context, r ArrayRequest) (array.Status, error) {
	var st array.Status
	err := c.call(ctx, RouteArray, r, &st)
	return st, err
}

// Explain says how a device was claimed and configured.
func (c *Client) Explain(ctx context.Context, device string) (nmp.Explanation, error) {
	var e nmp.Explanation
	err := c.call(ctx, RouteExplain, nil, &e, "device", device)
	return e, err
}

// ClaimRules lists the mount's claim rules.
func (c *Client) ClaimRules(ctx context.Context) (ClaimRulesReply, error) {
	var rep ClaimRulesReply
	err := c.call(ctx, RouteClaimRules, nil, &rep)
	return rep, err
}

// SATPRules lists the mount's SATP rules.
func (c *Client) SATPRules(ctx context.Context) (SATPRulesReply, error) {
	var rep SATPRulesReply
	err := c.call(ctx, RouteSATPRules, nil, &rep)
	return rep, err
}

// Verify runs the integrity check of a `mount --verify` device.
func (c *Client) Verify(ctx context.Context, device string) (integrity.Report, error) {
	var rep integrity.Report
	err := c.call(ctx, RouteVerify, nil, &rep, "device", device)
	return rep, err
}

// Events follows the event stream: the last history events kept first,
// then (with follow) new ones until fn returns false or ctx ends.
func (c *Client) Events(ctx context.Context, history int, follow bool, fn func(line []byte) bool) error {
	f := "0"
	if follow {
		f = "1"
	}
	_, path, _ := strings.Cut(RouteEvents, " ")
	return c.Stream(ctx, Endpoint(path, "history", strconv.Itoa(history), "follow", f), fn)
}

// Trace follows a device's per-I/O trace as JSON lines.
func (c *Client) Trace(ctx context.Context, device string, fn func(line []byte) bool) error {
	_, path, _ := strings.Cut(RouteTrace, " ")
	return c.Stream(ctx, Endpoint(path, "device", device), fn)
}

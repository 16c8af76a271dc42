package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// apiServer serves a host with one device, d0, of two file paths (names
// of one 1 MiB file), and returns a client of it.
func apiServer(t *testing.T) (*Client, *host.Host, string) {
	t.Helper()
	dir := t.TempDir()
	store := filepath.Join(dir, "lun.img")
	require.NoError(t, os.WriteFile(store, make([]byte, 1<<20), 0o600))
	link := filepath.Join(dir, "link.img")
	require.NoError(t, os.Link(store, link))
	h := host.New(host.Options{})
	t.Cleanup(func() { h.Close() })
	dc := host.DeviceConfig{Name: "d0", CheckInterval: host.Duration(time.Hour),
		Paths: []host.PathConfig{{URI: "file://" + store}, {URI: "file://" + link}}}
	require.NoError(t, h.Build(context.Background(), []host.DeviceConfig{dc}))
	s, err := Listen(filepath.Join(shortDir(t), "c.sock"), NewRuntime("/nowhere", h))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	c, err := Dial(s.Path())
	require.NoError(t, err)
	return c, h, store
}

// TestTypedErrors: errors keep their kind across the socket (errors.Is
// on the client) and their message word for word.
func TestTypedErrors(t *testing.T) {
	c, _, store := apiServer(t)
	ctx := context.Background()

	_, err := c.Explain(ctx, "nodev")
	require.ErrorIs(t, err, ErrNotFound)
	assert.EqualError(t, err, `no device "nodev" (devices: [d0])`)
	assert.NotErrorIs(t, err, ErrInvalid)

	_, err = c.PathAdmin(ctx, PathAdminRequest{Path: "vmhba1:C0:T0:L0", State: "sideways"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = c.PathAdmin(ctx, PathAdminRequest{Path: "vmhba9:C0:T0:L0", State: "on"})
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = c.PathAdd(ctx, PathAddRequest{Device: "d0", URI: "file://" + store})
	assert.ErrorIs(t, err, ErrExists)
	_, err = c.Array(ctx, ArrayRequest{Array: "lab", Action: "transfer", Controller: "B"})
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = c.Verify(ctx, "d0")
	assert.ErrorIs(t, err, ErrUnsupported)
	_, err = c.ClearFault(ctx, FaultClearRequest{Path: "vmhba1:C0:T0:L0", ID: 42})
	assert.ErrorIs(t, err, ErrNotFound)
	err = c.Post(ctx, "/v1/path/admin", map[string]any{"path": "x", "colour": "red"}, nil)
	assert.ErrorIs(t, err, ErrInvalid, "an unknown field in a request body")
	err = c.Get(ctx, "/v1/nothing", nil)
	assert.ErrorIs(t, err, ErrUnknownEndpoint)
	assert.EqualError(t, err, "unknown control endpoint GET /v1/nothing")
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "unknown-endpoint", ce.Code)
}

// TestIOErrorCodes: an I/O error of the taxonomy keeps its class across
// the wire, and an error of no kind arrives without a code.
func TestIOErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{&ioerr.Error{Class: ioerr.ClassPathFailure, Op: "read", Err: errors.New("gone")}, ioerr.ErrPathFailure},
		{ioerr.ErrAllPathsDown, ioerr.ErrAllPathsDown},
		{&ioerr.Error{Class: ioerr.ClassPermanentLoss, Op: "write"}, ioerr.ErrPermanentLoss},
	} {
		rec := httptest.NewRecorder()
		ReplyError(rec, tc.err)
		got := (&Client{socket: "test"}).replyErr(rec.Result())
		assert.ErrorIs(t, got, tc.want)
		assert.Equal(t, tc.err.Error(), got.Error())
	}
	rec := httptest.NewRecorder()
	ReplyError(rec, errors.New("plain"))
	assert.Equal(t, http.StatusBadRequest, rec.Code)
	assert.JSONEq(t, `{"error":"plain"}`, rec.Body.String(), "no code for an error of no kind")
	got := (&Client{socket: "test"}).replyErr(rec.Result())
	assert.EqualError(t, got, "plain")
	for _, k := range []error{ErrNotFound, ErrInvalid, ErrExists, ErrUnsupported, ErrRefused, ErrUnknownEndpoint, ErrPermission} {
		assert.NotErrorIs(t, got, k)
	}
}

// TestTypedRoutes: every route of api.go is served, and the replies keep
// the JSON shapes the CLI documents (the keys of the former ad-hoc maps).
func TestTypedRoutes(t *testing.T) {
	c, h, _ := apiServer(t)
	ctx := context.Background()

	st, err := c.Status(ctx)
	require.NoError(t, err)
	require.Len(t, st.Devices, 1)
	assert.Equal(t, "d0", st.Devices[0].Name)

	ps, err := c.PathAdmin(ctx, PathAdminRequest{Path: "vmhba2:C0:T0:L0", State: "off"})
	require.NoError(t, err)
	assert.Equal(t, "off", ps.Admin)
	_, err = c.PathAdmin(ctx, PathAdminRequest{Path: "vmhba2:C0:T0:L0", State: "on"})
	require.NoError(t, err)

	inj, err := c.InjectFault(ctx, FaultInjectRequest{Path: "vmhba1:C0:T0:L0", Spec: fault.Spec{Latency: time.Millisecond}})
	require.NoError(t, err)
	assert.Equal(t, FaultInjectReply{Path: "vmhba1:C0:T0:L0", ID: 1}, inj)
	list, err := c.FaultList(ctx)
	require.NoError(t, err)
	require.Len(t, list.Faults, 1)
	assert.Equal(t, "vmhba1:C0:T0:L0", list.Faults[0].Path)
	cl, err := c.ClearFault(ctx, FaultClearRequest{Path: "vmhba1:C0:T0:L0"})
	require.NoError(t, err)
	assert.Equal(t, FaultClearReply{Path: "vmhba1:C0:T0:L0", Cleared: "all"}, cl)

	ds, err := c.Policy(ctx, PolicyRequest{Device: "d0", PSP: "VMW_PSP_RR", Options: map[string]string{"iops": "1"}})
	require.NoError(t, err)
	assert.Equal(t, "VMW_PSP_RR", ds.PSP)
	fr, err := c.PathFence(ctx, "vmhba1:C0:T0:L0")
	require.NoError(t, err)
	assert.Equal(t, "d0", fr.Device)

	e, err := c.Explain(ctx, "d0")
	require.NoError(t, err)
	assert.Equal(t, "d0", e.Device)
	cr, err := c.ClaimRules(ctx)
	require.NoError(t, err)
	assert.NotEmpty(t, cr.Claimrules)
	sr, err := c.SATPRules(ctx)
	require.NoError(t, err)
	assert.NotEmpty(t, sr.Satprules)
	ar, err := c.Arrays(ctx)
	require.NoError(t, err)
	assert.Empty(t, ar.Arrays)
	pl, err := c.Plugins(ctx)
	require.NoError(t, err)
	assert.Contains(t, pl.MPPs, "NMP")

	rr, err := c.Reset(ctx, ResetRequest{Path: "vmhba1:C0:T0:L0", Kind: "lun"})
	require.NoError(t, err)
	assert.Equal(t, "06/29/03", rr.Sense)
	_, err = c.ClearFault(ctx, FaultClearRequest{Path: "vmhba1:C0:T0:L0"})
	require.NoError(t, err)
	dl, err := c.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, dl.Devices, 1)
	assert.Equal(t, "on", dl.Devices[0].State)
	ds, err = c.DeviceState(ctx, DeviceStateRequest{Device: "d0", State: "off", Reason: "test"})
	require.NoError(t, err)
	assert.Equal(t, "off", ds.State)
	ds, err = c.DeviceState(ctx, DeviceStateRequest{Device: "d0", State: "on"})
	require.NoError(t, err)
	assert.Equal(t, "on", ds.State)
	_, err = c.DeviceState(ctx, DeviceStateRequest{Device: "d0", State: "sideways"})
	assert.ErrorIs(t, err, ErrInvalid)

	h.Events().Publish(eventForTest())
	var lines []string
	require.NoError(t, c.Events(ctx, 10, false, func(line []byte) bool { lines = append(lines, string(line)); return true }))
	require.NotEmpty(t, lines)
	assert.Contains(t, lines[len(lines)-1], `"kind":"test"`)

	// The JSON of the replies that were maps before they had a type.
	for _, tc := range []struct {
		v    any
		want string
	}{
		{FaultClearReply{Path: "p", Cleared: "#2"}, `{"cleared":"#2","path":"p"}`},
		{FaultListReply{Faults: []FaultInfo{}}, `{"faults":[]}`},
		{ArraysReply{}, `{"arrays":null}`},
		{ClaimRulesReply{}, `{"claimrules":null}`},
		{SATPRulesReply{}, `{"satprules":null}`},
	} {
		b, err := json.Marshal(tc.v)
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(b))
	}
	// Every route answers something other than "unknown endpoint".
	for _, r := range []string{RouteStatus, RoutePathAdmin, RoutePathFence, RoutePathAdd, RouteFaultInject, RouteFaultClear,
		RouteFaultList, RoutePolicy, RoutePlugins, RouteArrays, RouteArray, RouteExplain, RouteClaimRules, RouteSATPRules, RouteVerify,
		RouteAdapters, RouteAdapter, RoutePathRemove, RouteReset, RouteDevices, RouteDeviceState} {
		method, path, _ := strings.Cut(r, " ")
		var body any
		if method == http.MethodPost {
			body = map[string]any{}
		}
		err := c.do(ctx, method, path, body, nil)
		assert.NotErrorIs(t, err, ErrUnknownEndpoint, r)
	}
}

func eventForTest() mpath.Event { return mpath.Event{Time: time.Now(), Kind: "test", Device: "d0"} }

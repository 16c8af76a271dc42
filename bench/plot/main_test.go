package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDrawSVG: one panel per run, with fio's total, each path (the victim
// labelled), the fault marker at t=0, drawn through svgplot.
func TestDrawSVG(t *testing.T) {
	dir := t.TempDir()
	var args []string
	for i, title := range []string{"round-robin — hang", "queue-length — hang"} {
		s := Series{Title: title, Note: "note <1>", Start: -2.4, End: 3.6, Victim: "p0",
			Paths: map[string][]Point{
				"p0": {{-2, 1000}, {-1, 1000}, {0.5, 0}, {2, 0}},
				"p1": {{-2, 1000}, {-1, 1000}, {0.5, 1800}, {2, 2000}},
			},
			FioIOPS: []Point{{-2, 2000}, {0, 1500}, {1, 2000}},
		}
		data, err := json.Marshal(s)
		require.NoError(t, err)
		name := filepath.Join(dir, "s"+string(rune('0'+i))+".json")
		require.NoError(t, os.WriteFile(name, data, 0o644))
		args = append(args, name)
	}
	out := filepath.Join(dir, "out.svg")
	require.NoError(t, drawSVG(append([]string{"-o", out, "-title", "failover & friends"}, args...)))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	svg := string(data)
	assert.Equal(t, 6, strings.Count(svg, "<polyline"), "fio total and two paths in each of two panels")
	assert.Equal(t, 2, strings.Count(svg, ">fault<"), "a fault marker per panel")
	assert.Equal(t, 4, strings.Count(svg, ">p0 (faulted)<"), "legend entry and hover title, in each panel")
	assert.Equal(t, 4, strings.Count(svg, ">fio total (100 ms)<"), "legend entry and hover title, in each panel")
	assert.Contains(t, svg, ">failover &amp; friends<")
	assert.Contains(t, svg, ">round-robin — hang<")
	assert.Contains(t, svg, ">note &lt;1&gt;<")
	assert.Contains(t, svg, ">-3<", "the x axis starts at the whole second before the start")
	assert.Contains(t, svg, ">4<", "and ends at the whole second after the end")
}

func TestDrawSVGBadInput(t *testing.T) {
	err := drawSVG([]string{"-o", filepath.Join(t.TempDir(), "x.svg")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no series")
	err = drawSVG([]string{filepath.Join(t.TempDir(), "missing.json")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-o")
	bad := filepath.Join(t.TempDir(), "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte("{"), 0o644))
	err = drawSVG([]string{"-o", filepath.Join(t.TempDir(), "x.svg"), bad})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bad.json")
}

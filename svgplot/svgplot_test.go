package svgplot

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNiceStep(t *testing.T) {
	for _, c := range []struct{ raw, want float64 }{
		{0.7, 1}, {1, 1}, {1.1, 2}, {2, 2}, {3, 5}, {5, 5}, {6, 10},
		{0.013, 0.02}, {140, 200}, {2500, 5000}, {9999, 10000},
		{0, 1}, {-3, 1}, {math.NaN(), 1}, {math.Inf(1), 1},
	} {
		assert.InDelta(t, c.want, NiceStep(c.raw), c.want*1e-9, "NiceStep(%g)", c.raw)
	}
}

func TestTicks(t *testing.T) {
	assert.Equal(t, []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Ticks(0, 10, 10))
	assert.Equal(t, []float64{-4, -2, 0, 2, 4, 6, 8}, Ticks(-5, 9, 10), "starts at the first multiple of the step at or above lo")
	assert.Equal(t, []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5}, Ticks(0, 0.5, 5), "no binary noise like 0.30000000000000004")
	assert.Equal(t, []float64{0, 2000, 4000, 6000}, Ticks(0, 7300, 4))
	assert.False(t, math.Signbit(Ticks(0, 1, 10)[0]), "zero is 0, not -0")
	assert.Equal(t, []float64{3}, Ticks(3, 3, 5), "an empty range gives its one value")
}

func TestCount(t *testing.T) {
	assert.Equal(t, "0", Count(0))
	assert.Equal(t, "950", Count(950))
	assert.Equal(t, "2.5", Count(2.5))
	assert.Equal(t, "1.5k", Count(1500))
	assert.Equal(t, "20k", Count(20000))
	assert.Equal(t, "2.3M", Count(2.3e6))
}

func render(t *testing.T, f Figure) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, f.Render(&b))
	out := b.String()
	// The document must be well-formed XML.
	dec := xml.NewDecoder(strings.NewReader(out))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "rendered SVG is not well-formed XML:\n%s", out)
	}
	return out
}

func TestEscaping(t *testing.T) {
	out := render(t, Figure{
		Title: `a<b & "c"`,
		Panels: []Panel{{
			Title: "<panel>", Note: "x & y",
			Series: []Series{{Name: `<script>alert("x")</script>`, Points: []Point{{0, 1}, {1, 2}}}},
			Spans:  []Span{{From: 0, To: 0.5, Label: "F<1>", Title: `"hover" & more`}},
		}},
	})
	assert.NotContains(t, out, "<script>")
	assert.NotContains(t, out, "<panel>")
	assert.Contains(t, out, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")
	assert.Contains(t, out, "a&lt;b &amp; &#34;c&#34;")
	assert.Contains(t, out, ">F&lt;1&gt;<")
	assert.Contains(t, out, "<title>&#34;hover&#34; &amp; more</title>")
}

func TestPanelElements(t *testing.T) {
	fig := Figure{
		Title: "failover",
		Panels: []Panel{{
			Title: "round-robin", Note: "seed 7", XLabel: "s from fault", YLabel: "IOPS",
			XMin: -2, XMax: 4,
			Series: []Series{
				{Name: "sda", Points: []Point{{-2, 100}, {0, 900}, {2, 1200}, {9, 5}}},
				{Name: "sdb", Color: "#123456", Width: 3, Points: []Point{{-1, 50}, {1, math.NaN()}, {3, 60}}},
				{Points: []Point{{0, 10}, {1, 20}}}, // no legend entry
			},
			Spans: []Span{
				{From: 0, To: 2, Label: "F5", Title: "F5 hang on sda"},
				{From: 1, To: 1, Color: "#7f7f7f", Label: "F6"},
				{From: 10, To: 12, Label: "F7"}, // out of range
			},
			Markers: []Marker{{At: 0, Label: "fault"}, {At: 99, Label: "never"}},
			Legend:  []LegendEntry{{Name: "fault active", Color: "#d62728", Swatch: true}},
		}},
	}
	out := render(t, fig)
	assert.True(t, strings.HasPrefix(out, `<svg xmlns="http://www.w3.org/2000/svg"`))
	assert.Equal(t, 3, strings.Count(out, "<polyline"), "one polyline per series")
	assert.Contains(t, out, `stroke="#123456" stroke-width="3"`)
	assert.Equal(t, 2, strings.Count(out, `stroke-width="3"/><text`), "legend lines: sda, sdb and no more (the unnamed series has none)")
	assert.Contains(t, out, ">sda<")
	assert.Contains(t, out, ">sdb<")
	assert.Contains(t, out, ">fault active<")
	assert.Contains(t, out, ">F5<")
	assert.Contains(t, out, ">F6<")
	assert.NotContains(t, out, ">F7<", "a span outside the x range is not drawn")
	assert.Contains(t, out, "<title>F5 hang on sda</title>")
	assert.Contains(t, out, ">fault<")
	assert.NotContains(t, out, ">never<", "a marker outside the x range is not drawn")
	assert.Contains(t, out, `stroke-dasharray="4 3"`)
	assert.Contains(t, out, ">round-robin<")
	assert.Contains(t, out, ">seed 7<")
	assert.Contains(t, out, ">s from fault<")
	assert.Contains(t, out, ">IOPS<")
	assert.Contains(t, out, ">failover<")
	// x ticks -2..4; the y axis goes up to 1200 rounded up to its 500 step.
	for _, tick := range []string{">-2<", ">0<", ">4<", ">500<", ">1.5k<"} {
		assert.Contains(t, out, tick)
	}
	// The point at x=9 is outside the range and the NaN point is skipped.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "<polyline") && strings.Contains(line, "#123456") {
			assert.Equal(t, 2, strings.Count(line, ","), "sdb keeps two finite points: %s", line)
		}
		if strings.HasPrefix(line, "<polyline") && strings.Contains(line, ">sda<") {
			assert.Equal(t, 3, strings.Count(line, ","), "sda drops the point outside the x range: %s", line)
		}
	}
}

func TestPanelsStack(t *testing.T) {
	one := Panel{Title: "one", Series: []Series{{Name: "a", Points: []Point{{0, 1}, {1, 2}}}}}
	two := one
	two.Title = "two"
	out := render(t, Figure{Panels: []Panel{one, two}})
	assert.Equal(t, 2, strings.Count(out, "<polyline"))
	assert.Contains(t, out, `height="782"`, "two 300-pixel panels plus their margins")
	assert.NotContains(t, out, ">-0<")
}

func TestAutoRanges(t *testing.T) {
	// No x range: taken from the points. No points at all: still a valid plot.
	out := render(t, Figure{Panels: []Panel{{Series: []Series{{Name: "a", Points: []Point{{5, 3}, {15, 7}}}}}}})
	assert.Contains(t, out, ">5<")
	assert.Contains(t, out, ">15<")
	render(t, Figure{Panels: []Panel{{}}})
}

func TestBadInput(t *testing.T) {
	var b bytes.Buffer
	err := (&Figure{}).Render(&b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no panels")
	err = (&Figure{Width: 100, Panels: []Panel{{}}}).Render(&b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "width 100 is too small")
}

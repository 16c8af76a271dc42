// Package svgplot draws simple line plots as hand-written SVG: a figure of
// one or more stacked panels, each with a title and note, x/y axes with
// nice ticks, polylines with a legend, shaded spans (fault windows) and
// vertical markers. It is the one plotter of the module (scenario reports
// and the failover benchmark both draw through it) and uses the standard
// library only: a leaf that imports nothing of this module.
package svgplot

import (
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// Palette is the default series colours, in order; Color picks from it.
var Palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

// Color is the i-th palette colour, wrapping around.
func Color(i int) string {
	if i < 0 {
		i = -i
	}
	return Palette[i%len(Palette)]
}

// Figure is a titled stack of panels sharing one width.
type Figure struct {
	Title string
	// Width is the figure width in pixels (default 960); FontSize the base
	// font size (default 12).
	Width    float64
	FontSize float64
	Panels   []Panel
}

// Panel is one plot area with its axes, series, spans, markers and legend.
type Panel struct {
	Title string // drawn above the panel, left
	Note  string // drawn above the panel, right
	// Height is the height of the plot area (default 300).
	Height         float64
	XLabel, YLabel string
	// XMin..XMax is the x range; when XMax <= XMin it is taken from the
	// series. Points outside it are not drawn; spans and markers are
	// clipped to it.
	XMin, XMax float64
	// YMax is the top of the y axis; 0 means "the largest y, rounded up to
	// a nice tick". The y axis starts at 0.
	YMax float64
	// XTicks and YTicks are the wanted number of tick intervals (defaults
	// 10 and 5); the ticks are nice numbers (1, 2 or 5 times a power of
	// ten), so the actual count may differ a little.
	XTicks, YTicks int
	// XFormat and YFormat format tick labels (defaults: %g, and Count).
	XFormat, YFormat func(float64) string
	Series           []Series
	Spans            []Span
	Markers          []Marker
	// Legend lists extra legend entries after the series (e.g. what a
	// span colour means).
	Legend []LegendEntry
}

// Point is one (x, y) sample.
type Point struct{ X, Y float64 }

// Series is one polyline. A series without a Name has no legend entry.
type Series struct {
	Name   string
	Color  string  // default: Color(index)
	Width  float64 // stroke width, default 1.5
	Points []Point
}

// Span is a shaded x interval (a fault window): Label is drawn as text at
// its left edge (e.g. "F5"), Title is the hover text.
type Span struct {
	From, To     float64
	Color        string // default "#d62728"
	Label, Title string
}

// Marker is a vertical dashed line at At with a text label (e.g. "fault"
// at t=0).
type Marker struct {
	At    float64
	Color string // default "red"
	Label string
}

// LegendEntry is an extra legend line: a shaded box when Swatch is set
// (for spans), else a line.
type LegendEntry struct {
	Name   string
	Color  string
	Swatch bool
}

// layout, in pixels
const (
	marginLeft   = 70.0
	marginRight  = 190.0
	figureTop    = 40.0 // room for the figure title
	panelTop     = 22.0 // room for the panel title above each panel
	panelBottom  = 44.0 // tick labels and x label below each panel
	figureBottom = 10.0
)

// NiceStep rounds a raw step up to 1, 2 or 5 times a power of ten; a step
// that is not positive and finite gives 1.
func NiceStep(raw float64) float64 {
	if !(raw > 0) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// Ticks returns nice tick values covering [lo, hi] with about n intervals:
// multiples of NiceStep((hi-lo)/n) from the first at or above lo to the
// last at or below hi.
func Ticks(lo, hi float64, n int) []float64 {
	if n <= 0 {
		n = 5
	}
	if !(hi > lo) {
		return []float64{lo}
	}
	step := NiceStep((hi - lo) / float64(n))
	var out []float64
	for k := math.Ceil(lo/step - 1e-9); ; k++ {
		v := k * step
		if v > hi+step*1e-9 {
			break
		}
		// Round away binary noise (0.30000000000000004).
		v = roundTo(v, step)
		if v == 0 {
			v = 0 // not "-0"
		}
		out = append(out, v)
	}
	return out
}

func roundTo(v, step float64) float64 {
	d := math.Max(0, -math.Floor(math.Log10(step))+1)
	p := math.Pow(10, d)
	return math.Round(v*p) / p
}

// Count formats a count compactly: 950, 1.5k, 2.3M.
func Count(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(math.Round(v/1e5)/10, 'g', -1, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(math.Round(v/1e2)/10, 'g', -1, 64) + "k"
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'g', -1, 64)
}

// esc escapes text and attribute values.
func esc(s string) string { return html.EscapeString(s) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Render writes the figure as one SVG document.
func (f *Figure) Render(w io.Writer) error {
	if len(f.Panels) == 0 {
		return errors.New("svgplot: the figure has no panels: add at least one Panel")
	}
	width := f.Width
	if width <= 0 {
		width = 960
	}
	if width <= marginLeft+marginRight+10 {
		return fmt.Errorf("svgplot: width %g is too small: it must exceed %g pixels", width, marginLeft+marginRight+10)
	}
	fs := f.FontSize
	if fs <= 0 {
		fs = 12
	}
	height := figureTop + figureBottom
	for _, p := range f.Panels {
		height += panelTop + p.height() + panelBottom
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="%g">`+"\n", width, height, width, height, fs)
	fmt.Fprintf(&b, `<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", width, height)
	if f.Title != "" {
		fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginLeft, esc(f.Title))
	}
	y0 := figureTop
	for i := range f.Panels {
		p := &f.Panels[i]
		y0 += panelTop
		p.render(&b, marginLeft, y0, width-marginLeft-marginRight)
		y0 += p.height() + panelBottom
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (p *Panel) height() float64 {
	if p.Height > 0 {
		return p.Height
	}
	return 300
}

// xRange is the panel's x range, from the series when not set.
func (p *Panel) xRange() (float64, float64) {
	lo, hi := p.XMin, p.XMax
	if hi > lo {
		return lo, hi
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if finite(pt.X) {
				lo, hi = math.Min(lo, pt.X), math.Max(hi, pt.X)
			}
		}
	}
	if !finite(lo) || !finite(hi) {
		return 0, 1
	}
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

// yRange is the top of the y axis and the y tick step.
func (p *Panel) yRange() (float64, float64) {
	n := p.YTicks
	if n <= 0 {
		n = 5
	}
	top := p.YMax
	if !(top > 0) || !finite(top) {
		top = 1
		for _, s := range p.Series {
			for _, pt := range s.Points {
				if finite(pt.Y) {
					top = math.Max(top, pt.Y)
				}
			}
		}
		step := NiceStep(top / float64(n))
		return math.Ceil(top/step-1e-9) * step, step
	}
	return top, NiceStep(top / float64(n))
}

func (p *Panel) render(b *strings.Builder, left, top, pw float64) {
	ph := p.height()
	xlo, xhi := p.xRange()
	ymax, ystep := p.yRange()
	clampX := func(v float64) float64 { return math.Min(math.Max(v, xlo), xhi) }
	X := func(v float64) float64 { return left + pw*(clampX(v)-xlo)/(xhi-xlo) }
	Y := func(v float64) float64 { return top + ph*(1-math.Min(math.Max(v, 0), ymax)/ymax) }
	xfmt, yfmt := p.XFormat, p.YFormat
	if xfmt == nil {
		xfmt = func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	}
	if yfmt == nil {
		yfmt = Count
	}

	if p.Title != "" {
		fmt.Fprintf(b, `<text x="%.0f" y="%.1f" font-size="13" font-weight="bold">%s</text>`+"\n", left, top-6, esc(p.Title))
	}
	if p.Note != "" {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", left+pw, top-6, esc(p.Note))
	}
	// Spans under everything else.
	for i, s := range p.Spans {
		if !finite(s.From) || !finite(s.To) || s.To < xlo || s.From > xhi {
			continue
		}
		c := s.Color
		if c == "" {
			c = "#d62728"
		}
		x0, x1 := X(s.From), X(s.To)
		if x1-x0 < 2 {
			x1 = x0 + 2
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.13">`, x0, top, x1-x0, ph, esc(c))
		if s.Title != "" {
			fmt.Fprintf(b, `<title>%s</title>`, esc(s.Title))
		}
		b.WriteString("</rect>\n")
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", x0, top, x0, top+ph, esc(c))
		if s.Label != "" {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s" font-size="10">%s</text>`+"\n", x0+2, top+10+float64(i%4)*11, esc(c), esc(s.Label))
		}
	}
	// Frame, grid, ticks.
	fmt.Fprintf(b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	for v := 0.0; v <= ymax+ystep/2; v += ystep {
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, Y(v), left+pw, Y(v), left-6, Y(v)+4, esc(yfmt(roundTo(v, ystep))))
	}
	nx := p.XTicks
	if nx <= 0 {
		nx = 10
	}
	for _, t := range Ticks(xlo, xhi, nx) {
		xx := X(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
			xx, top+ph, xx, top+ph+5, xx, top+ph+17, esc(xfmt(t)))
	}
	if p.XLabel != "" {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s</text>`+"\n", left+pw/2, top+ph+32, esc(p.XLabel))
	}
	if p.YLabel != "" {
		fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle" fill="#444">%s</text>`+"\n", left-52, top+ph/2, esc(p.YLabel))
	}
	// Markers.
	for _, m := range p.Markers {
		if !finite(m.At) || m.At < xlo || m.At > xhi {
			continue
		}
		c := m.Color
		if c == "" {
			c = "red"
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4 3" stroke-width="1.5"/>`+"\n", X(m.At), top, X(m.At), top+ph, esc(c))
		if m.Label != "" {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", X(m.At)+3, top+11, esc(c), esc(m.Label))
		}
	}
	// Series and legend.
	lx, ly := left+pw+12, top+10
	legendLine := func(name, c string) {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			lx, ly, lx+20, ly, esc(c), lx+26, ly+4, esc(name))
		ly += 16
	}
	for i, s := range p.Series {
		c := s.Color
		if c == "" {
			c = Color(i)
		}
		wd := s.Width
		if wd <= 0 {
			wd = 1.5
		}
		var pts []string
		for _, pt := range s.Points {
			if !finite(pt.X) || !finite(pt.Y) || pt.X < xlo || pt.X > xhi {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(pt.X), Y(pt.Y)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="%g" points="%s">`, esc(c), wd, strings.Join(pts, " "))
			if s.Name != "" {
				fmt.Fprintf(b, `<title>%s</title>`, esc(s.Name))
			}
			b.WriteString("</polyline>\n")
		}
		if s.Name != "" {
			legendLine(s.Name, c)
		}
	}
	for _, e := range p.Legend {
		if e.Swatch {
			ly += 4
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="20" height="10" fill="%s" fill-opacity="0.25"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
				lx, ly-5, esc(e.Color), lx+26, ly+4, esc(e.Name))
			ly += 14
			continue
		}
		legendLine(e.Name, e.Color)
	}
}

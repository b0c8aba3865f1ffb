package console

import (
	"math"
	"strconv"
	"strings"
)

// Charts are SVG drawn on the server: the geometry is computed here, in
// plain numbers, and templates/chart.html only places it. There is no
// script; a point's exact value is in its <title> (the browser's tooltip)
// and in the tables beside the charts.

// Chart sizes, in SVG user units (the SVG scales to its box).
const (
	chartW, chartH                       = 560, 220
	padLeft, padRight, padTop, padBottom = 56.0, 16.0, 14.0, 34.0
	maxXLabels                           = 12
	barGapFrac                           = 0.25
)

// chart is one chart, ready to place.
type chart struct {
	ID, Title string
	// Note says whose word the figures are.
	Note          string
	Width, Height int
	// The plot area: left, top, right, bottom.
	X0, Y0, X1, Y1 string
	XTicks, YTicks []tick
	XLabel         string
	Lines          []line
	Bars           []bar
	Ref            *refLine
	Empty          bool
}

// tick is an axis mark: its position along the axis and its label.
type tick struct {
	Pos   string
	Label string
}

// line is a series drawn as a polyline with a dot per point.
type line struct {
	Class, Label string
	Points       string
	Dots         []dot
}

type dot struct {
	X, Y  string
	Title string
}

type bar struct {
	X, Y, W, H string
	Class      string
	Title      string
}

// refLine is a horizontal line across the plot (a budget).
type refLine struct {
	Y, LabelX, LabelY string
	Label             string
}

// point is one figure of a round.
type point struct {
	X, Y float64
}

// series is a named list of points, in X order.
type series struct {
	Label, Class string
	Points       []point
}

// num formats a coordinate for SVG: one decimal is finer than a pixel.
func num(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// axis maps data values onto a pixel range.
type axis struct {
	lo, hi     float64 // data
	from, to   float64 // pixels
	ticks      []float64
	tickFormat func(float64) string
}

func (a axis) pos(v float64) float64 {
	if a.hi == a.lo {
		return (a.from + a.to) / 2
	}
	return a.from + (v-a.lo)/(a.hi-a.lo)*(a.to-a.from)
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that cuts span
// into about n parts.
func niceStep(span float64, n int) float64 {
	if span <= 0 || !finite(span) {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// valueAxis is a y axis covering lo..hi (widened to include zero when
// fromZero) with round ticks.
func valueAxis(lo, hi float64, fromZero bool, from, to float64) axis {
	if fromZero {
		lo, hi = min(lo, 0), max(hi, 0)
	}
	if hi == lo {
		d := math.Max(math.Abs(hi)*0.1, 1)
		if fromZero && lo == 0 {
			hi = d
		} else {
			lo, hi = lo-d, hi+d
		}
	}
	step := niceStep(hi-lo, 4)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	a := axis{lo: lo, hi: hi, from: from, to: to, tickFormat: func(v float64) string {
		return strconv.FormatFloat(v, 'f', decimals, 64)
	}}
	for v := lo; v <= hi+step/2; v += step {
		a.ticks = append(a.ticks, math.Round(v/step)*step)
	}
	return a
}

// roundTicks labels rounds lo..hi, at most maxXLabels of them.
func roundTicks(lo, hi int) []int {
	step := 1
	for (hi-lo)/step+1 > maxXLabels {
		step = int(niceStep(float64(hi-lo), maxXLabels-2))
	}
	var out []int
	for r := lo; r <= hi; r += step {
		out = append(out, r)
	}
	return out
}

func newChart(id, title, note string) chart {
	return chart{ID: id, Title: title, Note: note, Width: chartW, Height: chartH,
		X0: num(padLeft), Y0: num(padTop), X1: num(chartW - padRight), Y1: num(chartH - padBottom), XLabel: "round"}
}

func (c *chart) yTicks(a axis) {
	for _, v := range a.ticks {
		c.YTicks = append(c.YTicks, tick{Pos: num(a.pos(v)), Label: a.tickFormat(v)})
	}
}

// lineChart draws ss against rounds; ref, when set, is a horizontal line
// labelled refLabel (a budget) that the y axis always includes.
func lineChart(id, title, note string, ss []series, fromZero bool, ref *float64, refLabel string, format func(float64) string) chart {
	c := newChart(id, title, note)
	lo, hi := math.Inf(1), math.Inf(-1)
	xlo, xhi := math.Inf(1), math.Inf(-1)
	n := 0
	for _, s := range ss {
		for _, p := range s.Points {
			if !finite(p.Y) {
				continue
			}
			lo, hi = min(lo, p.Y), max(hi, p.Y)
			xlo, xhi = min(xlo, p.X), max(xhi, p.X)
			n++
		}
	}
	if n == 0 {
		c.Empty = true
		return c
	}
	if ref != nil {
		lo, hi = min(lo, *ref), max(hi, *ref)
	}
	ya := valueAxis(lo, hi, fromZero, chartH-padBottom, padTop)
	// Half a round of room at each end, so the first and last dots are
	// not on the frame.
	xa := axis{lo: xlo - 0.5, hi: xhi + 0.5, from: padLeft, to: chartW - padRight}
	c.yTicks(ya)
	for _, r := range roundTicks(int(xlo), int(xhi)) {
		c.XTicks = append(c.XTicks, tick{Pos: num(xa.pos(float64(r))), Label: strconv.Itoa(r)})
	}
	for i, s := range ss {
		l := line{Class: s.Class, Label: s.Label}
		if l.Class == "" {
			l.Class = "s" + strconv.Itoa(i)
		}
		var pts []string
		for _, p := range s.Points {
			if !finite(p.Y) {
				continue
			}
			x, y := num(xa.pos(p.X)), num(ya.pos(p.Y))
			pts = append(pts, x+","+y)
			t := "round " + strconv.Itoa(int(p.X)) + ": " + format(p.Y)
			if s.Label != "" {
				t = s.Label + ", " + t
			}
			l.Dots = append(l.Dots, dot{X: x, Y: y, Title: t})
		}
		l.Points = strings.Join(pts, " ")
		c.Lines = append(c.Lines, l)
	}
	if ref != nil {
		y := ya.pos(*ref)
		c.Ref = &refLine{Y: num(y), LabelX: num(chartW - padRight - 4), LabelY: num(y - 4), Label: refLabel}
	}
	return c
}

// barChart draws one bar per round; classes and titles are per bar.
func barChart(id, title, note string, rounds []int, values []float64, classes, titles []string) chart {
	c := newChart(id, title, note)
	if len(rounds) == 0 {
		c.Empty = true
		return c
	}
	lo, hi := 0.0, math.Inf(-1)
	for _, v := range values {
		hi = max(hi, v)
	}
	ya := valueAxis(lo, hi, true, chartH-padBottom, padTop)
	xlo, xhi := rounds[0], rounds[0]
	for _, r := range rounds {
		xlo, xhi = min(xlo, r), max(xhi, r)
	}
	xa := axis{lo: float64(xlo) - 0.5, hi: float64(xhi) + 0.5, from: padLeft, to: chartW - padRight}
	band := (chartW - padLeft - padRight) / float64(xhi-xlo+1)
	w := band * (1 - barGapFrac)
	c.yTicks(ya)
	for _, r := range roundTicks(xlo, xhi) {
		c.XTicks = append(c.XTicks, tick{Pos: num(xa.pos(float64(r))), Label: strconv.Itoa(r)})
	}
	for i, r := range rounds {
		top, bottom := ya.pos(values[i]), ya.pos(0)
		c.Bars = append(c.Bars, bar{X: num(xa.pos(float64(r)) - w/2), Y: num(top), W: num(w), H: num(bottom - top),
			Class: classes[i], Title: titles[i]})
	}
	return c
}

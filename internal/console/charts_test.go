package console

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct {
		span float64
		n    int
		want float64
	}{
		{1, 4, 0.5}, {0.35, 4, 0.1}, {10, 4, 5}, {3500, 4, 1000}, {7, 10, 1}, {0, 4, 1}, {math.NaN(), 4, 1},
	} {
		if got := niceStep(tc.span, tc.n); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("niceStep(%v, %d) = %v, want %v", tc.span, tc.n, got, tc.want)
		}
	}
}

// TestValueAxis: the ticks are round numbers that cover the data, the
// axis maps its ends to the pixel range, and a flat series still gets an
// axis around it.
func TestValueAxis(t *testing.T) {
	for _, tc := range []struct {
		lo, hi   float64
		fromZero bool
		first    string
		last     string
	}{
		{0.468, 0.768, false, "0.4", "0.8"}, // tick labels to the step's decimals
		{0.468, 0.768, true, "0.0", "0.8"},
		{3330, 3330, true, "0", "4000"},
		{2, 2, false, "1.0", "3.0"}, // a flat series: ±1 around it
		{-3, 5, false, "-4", "6"},
	} {
		a := valueAxis(tc.lo, tc.hi, tc.fromZero, 100, 0)
		if len(a.ticks) < 2 {
			t.Fatalf("%v..%v: ticks %v", tc.lo, tc.hi, a.ticks)
		}
		first, last := a.tickFormat(a.ticks[0]), a.tickFormat(a.ticks[len(a.ticks)-1])
		if first != tc.first || last != tc.last {
			t.Errorf("%v..%v (from zero %v): ticks %s..%s, want %s..%s", tc.lo, tc.hi, tc.fromZero, first, last, tc.first, tc.last)
		}
		if a.ticks[0] > tc.lo || a.ticks[len(a.ticks)-1] < tc.hi {
			t.Errorf("%v..%v: ticks %v do not cover the data", tc.lo, tc.hi, a.ticks)
		}
		if a.pos(a.lo) != 100 || a.pos(a.hi) != 0 {
			t.Errorf("%v..%v: ends map to %v, %v", tc.lo, tc.hi, a.pos(a.lo), a.pos(a.hi))
		}
	}
}

func TestRoundTicks(t *testing.T) {
	if got := roundTicks(1, 5); len(got) != 5 || got[0] != 1 || got[4] != 5 {
		t.Errorf("1..5: %v", got)
	}
	got := roundTicks(1, 200)
	if len(got) > maxXLabels || got[0] != 1 {
		t.Errorf("1..200: %d labels %v", len(got), got)
	}
}

func parse(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLineChart: every point inside the plot area, in round order, a
// higher value drawn higher, its exact value in its tooltip; the budget
// line in range even above the data.
func TestLineChart(t *testing.T) {
	pts := []point{{1, 0.5}, {2, 0.6}, {3, math.NaN()}, {4, 0.55}}
	ref := 3.0
	c := lineChart("c", "title", "note", []series{{Label: "acc", Points: pts}}, false, &ref, "budget", func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) })
	if c.Empty || len(c.Lines) != 1 {
		t.Fatalf("chart %+v", c)
	}
	l := c.Lines[0]
	if len(l.Dots) != 3 || len(strings.Fields(l.Points)) != 3 {
		t.Fatalf("%d dots, points %q: the NaN must be left out", len(l.Dots), l.Points)
	}
	x0, x1, y0, y1 := parse(t, c.X0), parse(t, c.X1), parse(t, c.Y0), parse(t, c.Y1)
	var prevX float64
	ys := map[string]float64{}
	for i, d := range l.Dots {
		x, y := parse(t, d.X), parse(t, d.Y)
		if x <= x0 || x >= x1 || y < y0 || y > y1 {
			t.Errorf("dot %d at (%v, %v) outside the plot (%v..%v, %v..%v)", i, x, y, x0, x1, y0, y1)
		}
		if i > 0 && x <= prevX {
			t.Errorf("dot %d is not right of the one before", i)
		}
		prevX = x
		ys[d.Title] = y
	}
	if !(ys["acc, round 2: 0.600"] < ys["acc, round 4: 0.550"] && ys["acc, round 4: 0.550"] < ys["acc, round 1: 0.500"]) {
		t.Errorf("heights %v: a higher value must be higher on the page (smaller y)", ys)
	}
	if c.Ref == nil || parse(t, c.Ref.Y) < y0 || parse(t, c.Ref.Y) > y1 || c.Ref.Label != "budget" {
		t.Errorf("reference line %+v", c.Ref)
	}
	if e := lineChart("e", "t", "n", []series{{Points: []point{{1, math.Inf(1)}}}}, false, nil, "", func(float64) string { return "" }); !e.Empty {
		t.Error("a chart of no finite point is not empty")
	}
}

// TestBarChart: bars stand on the zero line, their heights in proportion
// to the values, with their class and tooltip.
func TestBarChart(t *testing.T) {
	c := barChart("b", "t", "n", []int{1, 2, 3}, []float64{4, 2, 0}, []string{"bar-ok", "bar-failed", "bar-ok"}, []string{"a", "b", "c"})
	if len(c.Bars) != 3 {
		t.Fatalf("%d bars", len(c.Bars))
	}
	h := func(i int) float64 { return parse(t, c.Bars[i].H) }
	bottom := func(i int) float64 { return parse(t, c.Bars[i].Y) + h(i) }
	if math.Abs(h(0)-2*h(1)) > 0.2 || h(2) != 0 {
		t.Errorf("heights %v %v %v, want 2:1:0", h(0), h(1), h(2))
	}
	if math.Abs(bottom(0)-bottom(1)) > 0.2 || math.Abs(bottom(0)-parse(t, c.Y1)) > 0.2 {
		t.Errorf("bars do not stand on the axis: %v %v (axis %v)", bottom(0), bottom(1), c.Y1)
	}
	if c.Bars[1].Class != "bar-failed" || c.Bars[1].Title != "b" {
		t.Errorf("bar 2: %+v", c.Bars[1])
	}
	if e := barChart("e", "t", "n", nil, nil, nil, nil); !e.Empty {
		t.Error("a chart of no round is not empty")
	}
}

// TestChartTemplate: a chart renders as one SVG, with a polyline per
// series, a circle per point and a rect per bar, and no script.
func TestChartTemplate(t *testing.T) {
	line := lineChart("l", "Accuracy <&>", "n", []series{{Points: []point{{1, 0.5}, {2, 0.7}}}}, false, nil, "", func(v float64) string { return "x" })
	bars := barChart("b", "Bars", "n", []int{1, 2}, []float64{3, 4}, []string{"bar-ok", "bar-ok"}, []string{"a", "b"})
	var b bytes.Buffer
	tmpl := pages["study"]
	for _, c := range []chart{line, bars} {
		if err := tmpl.ExecuteTemplate(&b, "chart", c); err != nil {
			t.Fatal(err)
		}
	}
	out := b.String()
	// The title is in the caption, the label and the SVG title, escaped.
	for w, n := range map[string]int{"<svg": 2, "<polyline": 1, "<circle": 2, "<rect class=\"bar-ok\"": 2, "Accuracy &lt;&amp;&gt;": 3, "<script": 0} {
		if got := strings.Count(out, w); got != n {
			t.Errorf("%d × %q, want %d\n%s", got, w, n, out)
		}
	}
}

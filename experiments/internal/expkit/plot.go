package expkit

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is one line of a plot.
type Series struct {
	Name   string
	X, Y   []float64
	Dashed bool
}

var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}

// Lines draws series as lines with points into a PNG.
func Lines(path, title, xlabel, ylabel string, logX, logY bool, series ...Series) error {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xlabel, ylabel
	if logX {
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		// A few measured x values (2, 4, ... 32 clients) get a tick each;
		// power-of-ten ticks alone would label only "10".
		var xs []float64
		for _, s := range series {
			for _, x := range s.X {
				if !slices.Contains(xs, x) {
					xs = append(xs, x)
				}
			}
		}
		if len(xs) > 0 && len(xs) <= 10 {
			var ticks []plot.Tick
			for _, x := range xs {
				ticks = append(ticks, plot.Tick{Value: x, Label: tickLabel(x)})
			}
			p.X.Tick.Marker = plot.ConstantTicks(ticks)
		}
	}
	if logY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	for i, s := range series {
		pts := make(plotter.XYs, len(s.X))
		for j := range s.X {
			pts[j].X, pts[j].Y = s.X[j], s.Y[j]
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		c := palette[i%len(palette)]
		l.Color, sc.Color = c, c
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		sc.Shape = draw.CircleGlyph{}
		p.Add(l, sc)
		p.Legend.Add(s.Name, l, sc)
	}
	p.Legend.Top = true
	// Headroom above the data for the legend, one line per series.
	room := 0.1 + 0.07*float64(len(series))
	if logY {
		p.Y.Max *= math.Pow(p.Y.Max/p.Y.Min, room)
	} else {
		p.Y.Max += room * (p.Y.Max - p.Y.Min)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// tickLabel writes 10^k for powers of ten from 10^3 up, and the plain
// number otherwise.
func tickLabel(x float64) string {
	if k := math.Log10(x); x >= 1e3 && k == math.Trunc(k) {
		return fmt.Sprintf("10^%d", int(k))
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

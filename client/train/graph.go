package train

import (
	"fmt"
	"sync"

	"github.com/fedledger/fedledger/internal/model"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// graph is a model's Gorgonia expression graph for one mini-batch size,
// built once per Train call and run once per step.
type graph struct {
	g      *G.ExprGraph
	x, y   *G.Node
	xT, yT *tensor.Dense
	params G.Nodes // per layer: W (in×out), b (1×out)
	// trainable are the params the solver moves (all, or the output bias).
	trainable G.Nodes
	bce       *G.Node // mean binary cross-entropy of the batch
	bceVal    G.Value
	cost      *G.Node // bce + mu/2 ||w - anchor||²
	machine   G.VM
}

// buildMu serialises graph construction. Gorgonia v0.9 shares package-level
// constant nodes between graphs and caches their hash codes lazily, so two
// graphs built at once in one process (the demo, in-process tests) race
// inside gorgonia.Grad. Running built graphs concurrently is safe.
var buildMu sync.Mutex

// graphOpts are a graph's training options beyond the model.
type graphOpts struct {
	// anchor and mu: with mu > 0 the cost includes the proximal term
	// mu/2 ||w - anchor||² (FedProx towards the global model, Ditto's
	// personal model towards it).
	anchor []float64
	mu     float64
	// outputBiasOnly trains the output layer's bias alone (a per-site
	// intercept), every other parameter fixed.
	outputBiasOnly bool
}

// newGraph builds the graph with parameters initialised from params.
func newGraph(spec model.Spec, batch int, params []float64, o graphOpts) (*graph, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	g := G.NewGraph()
	m := &graph{g: g}
	m.xT = tensor.New(tensor.WithShape(batch, spec.Inputs), tensor.Of(tensor.Float64))
	m.yT = tensor.New(tensor.WithShape(batch), tensor.Of(tensor.Float64))
	m.x = G.NewMatrix(g, tensor.Float64, G.WithShape(batch, spec.Inputs), G.WithName("x"), G.WithValue(m.xT))
	m.y = G.NewVector(g, tensor.Float64, G.WithShape(batch), G.WithName("y"), G.WithValue(m.yT))

	var prox *G.Node
	var trainable G.Nodes
	h := m.x
	off := 0
	layers := spec.Layers()
	for i, l := range layers {
		wOff := off
		wv := append([]float64(nil), params[off:off+l.In*l.Out]...)
		off += l.In * l.Out
		bOff := off
		bv := append([]float64(nil), params[off:off+l.Out]...)
		off += l.Out
		w := G.NewMatrix(g, tensor.Float64, G.WithShape(l.In, l.Out), G.WithName(fmt.Sprintf("w%d", i)),
			G.WithValue(tensor.New(tensor.WithShape(l.In, l.Out), tensor.WithBacking(wv))))
		b := G.NewMatrix(g, tensor.Float64, G.WithShape(1, l.Out), G.WithName(fmt.Sprintf("b%d", i)),
			G.WithValue(tensor.New(tensor.WithShape(1, l.Out), tensor.WithBacking(bv))))
		m.params = append(m.params, w, b)
		if !o.outputBiasOnly {
			trainable = append(trainable, w)
		}
		if !o.outputBiasOnly || i == len(layers)-1 {
			trainable = append(trainable, b)
		}
		z, err := G.Mul(h, w)
		if err != nil {
			return nil, err
		}
		if z, err = G.BroadcastAdd(z, b, nil, []byte{0}); err != nil {
			return nil, err
		}
		if i < len(layers)-1 {
			if h, err = G.Rectify(z); err != nil {
				return nil, err
			}
		} else {
			h = z
		}
		if o.mu > 0 {
			for _, pa := range []struct {
				p   *G.Node
				off int
			}{{w, wOff}, {b, bOff}} {
				p := pa.p
				shape := p.Shape().Clone()
				av := append([]float64(nil), o.anchor[pa.off:pa.off+shape.TotalSize()]...)
				anchor := G.NewConstant(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(av)), G.WithName(p.Name()+"_anchor"))
				d := G.Must(G.Sub(p, anchor))
				s := G.Must(G.Sum(G.Must(G.Square(d))))
				if prox == nil {
					prox = s
				} else {
					prox = G.Must(G.Add(prox, s))
				}
			}
		}
	}
	logits, err := G.Reshape(h, tensor.Shape{batch})
	if err != nil {
		return nil, err
	}
	// Binary cross-entropy from logits, in the stable form
	// softplus(z) - y·z = -[y log σ(z) + (1-y) log(1-σ(z))].
	perSample := G.Must(G.Sub(G.Must(G.Softplus(logits)), G.Must(G.HadamardProd(m.y, logits))))
	m.bce = G.Must(G.Mean(perSample))
	G.Read(m.bce, &m.bceVal)
	m.cost = m.bce
	if prox != nil {
		m.cost = G.Must(G.Add(m.bce, G.Must(G.Mul(G.NewConstant(o.mu/2), prox))))
	}
	m.trainable = trainable
	if _, err := G.Grad(m.cost, trainable...); err != nil {
		return nil, fmt.Errorf("train: gradient: %w", err)
	}
	m.machine = G.NewTapeMachine(g, G.BindDualValues(trainable...))
	return m, nil
}

// step runs forward and backward on the batch already copied into xT/yT and
// returns the batch's cross-entropy.
func (m *graph) step(solver G.Solver) (float64, error) {
	defer m.machine.Reset()
	if err := m.machine.RunAll(); err != nil {
		return 0, fmt.Errorf("train: forward/backward: %w", err)
	}
	loss := m.bceVal.Data().(float64)
	if err := solver.Step(G.NodesToValueGrads(m.trainable)); err != nil {
		return 0, fmt.Errorf("train: solver: %w", err)
	}
	return loss, nil
}

// flat concatenates the current parameter values in the package's layout.
func (m *graph) flat() []float64 {
	var out []float64
	for _, p := range m.params {
		out = append(out, p.Value().Data().([]float64)...)
	}
	return out
}

func (m *graph) close() { m.machine.Close() }

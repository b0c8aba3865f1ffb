package coordinator

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/model"
)

// The coordinator's own computation, run by the driver's worker: the
// collective key, the sum of a round's updates, and the next model from
// the decrypted (or plaintext) sum. None of it needs a secret.

// computeKey makes the collective public key from every participant's
// public-key share; it is kept until the key setup is saved.
func (c *Coordinator) computeKey(a study.ComputeCollectiveKey) (audit.Hash, error) {
	st := c.cfg.Study
	points := map[string]uint64{}
	order := make([]string, len(a.Participants))
	for i, p := range a.Participants {
		points[p.Site], order[i] = p.Point, p.Site
	}
	s, err := secure.NewSetup(st.ID, st.HEPreset, st.CRS(), points, order, a.PkShares, st.Model.NumParams())
	if err != nil {
		return audit.Hash{}, err
	}
	c.mu.Lock()
	c.pending = s
	c.mu.Unlock()
	return s.KeyHash(), nil
}

// aggregate adds a round's updates, in site order: the ciphertexts under
// the study's key, or the plaintext weighted deltas into the plaintext
// aggregate Σ n_i·Δ_i, Σ n_i. The aggregate is stored for the decryptors
// and countersigners to fetch.
// project opens every contribution's projection onto the round's
// direction from the key holders' shares (the norm check).
func (c *Coordinator) project(a study.Project) (map[string]float64, error) {
	setup := c.keySetup()
	if setup == nil {
		return nil, errors.New("no key setup")
	}
	preset, err := secure.LookupPreset(c.cfg.Study.HEPreset)
	if err != nil {
		return nil, err
	}
	signed := make([]audit.Contribution, len(a.Updates))
	for i, u := range a.Updates {
		signed[i] = u.Contribution
	}
	digest := audit.ManifestDigest(c.cfg.Study.ID, a.Round, a.Parent.Hash, signed)
	drift, err := c.drift(a.Parent.Hash)
	if err != nil {
		return nil, err
	}
	dir, err := secure.NewDirection(preset, secure.RoundDirectionAlong(digest, drift))
	if err != nil {
		return nil, err
	}
	holders := slices.Sorted(maps.Keys(a.Shares))
	out := map[string]float64{}
	for _, u := range a.Updates {
		b, err := c.objects.Get(u.UpdateHash)
		if err != nil {
			return nil, fmt.Errorf("update of %s: %w", u.Site, err)
		}
		var shares [][]uint64
		for _, h := range holders {
			shares = append(shares, a.Shares[h][u.Site])
		}
		if out[u.Site], err = setup.Project(a.Round, b, shares, c.cfg.Study.Threshold, dir); err != nil {
			return nil, fmt.Errorf("projection of %s: %w", u.Site, err)
		}
	}
	return out, nil
}

// drift is the global model's movement so far, parent minus initial, for
// the norm check's direction.
func (c *Coordinator) drift(parent [32]byte) ([]float64, error) {
	load := func(h [32]byte) ([]float64, error) {
		b, err := c.models.Get(h)
		if err != nil {
			return nil, err
		}
		_, p, err := model.Decode(b)
		return p, err
	}
	p, err := load(parent)
	if err != nil {
		return nil, fmt.Errorf("parent model: %w", err)
	}
	init, err := load(c.initial.Hash)
	if err != nil {
		return nil, fmt.Errorf("initial model: %w", err)
	}
	return aggregation.Drift(p, init)
}

func (c *Coordinator) aggregate(a study.Aggregate) (study.Object, error) {
	fetch := func(i int) ([]byte, error) {
		b, err := c.objects.Get(a.Updates[i].UpdateHash)
		if err != nil {
			return nil, fmt.Errorf("update of %s: %w", a.Updates[i].Site, err)
		}
		return b, nil
	}
	var agg []byte
	if setup := c.keySetup(); setup != nil {
		var err error
		if agg, err = setup.Aggregate(a.Round, len(a.Updates), fetch); err != nil {
			return study.Object{}, err
		}
	} else {
		dim := c.cfg.Study.Model.NumParams()
		sum := aggregation.NewWeightedSum(dim)
		var each [][]float64 // unweighted, for a robust aggregator
		for i, u := range a.Updates {
			b, err := fetch(i)
			if err != nil {
				return study.Object{}, err
			}
			d, err := aggregation.DecodeWeightedDelta(b, dim)
			if err != nil {
				return study.Object{}, fmt.Errorf("update of %s: %w", u.Site, err)
			}
			if err := sum.Add(d, float64(u.Samples)); err != nil {
				return study.Object{}, fmt.Errorf("update of %s: %w", u.Site, err)
			}
			if c.robust != nil {
				delta := make([]float64, dim)
				for j, v := range d {
					delta[j] = v / float64(u.Samples)
				}
				each = append(each, delta)
			}
		}
		if c.robust != nil {
			// The robust rule's update stands for the whole round: it is
			// written as a sum of weight W (the contributors' samples), so
			// the weight check and the server optimiser see it as the
			// round's average.
			r, err := c.robust.Aggregate(each)
			if err != nil {
				return study.Object{}, fmt.Errorf("%s: %w", c.robust, err)
			}
			for j := range r {
				sum.Sum[j] = r[j] * sum.Weight
			}
		}
		agg = aggregation.EncodeSum(sum.Sum, sum.Weight)
	}
	h, err := c.objects.Put(agg)
	return study.Object{Hash: h, Size: uint64(len(agg))}, err
}

// combine opens the aggregate (decrypting it with the t signed shares in a
// secure study), checks its total weight is the sum of the sample counts
// the contributors signed (a site that lied about its n fails the round
// instead of skewing it), and applies the server optimiser from the
// parent and the optimiser's state before the round: the new model and
// state, both stored. Every countersigning hospital recomputes the same.
func (c *Coordinator) combine(a study.Combine) (out, opt study.Object, err error) {
	st := c.cfg.Study
	dim := st.Model.NumParams()
	agg, err := c.objects.Get(a.Aggregate.Hash)
	if err != nil {
		return out, opt, err
	}
	var sum []float64
	var weight float64
	if setup := c.keySetup(); setup != nil {
		shares := make([][]byte, len(a.Shares))
		for i, h := range a.Shares {
			if shares[i], err = c.objects.Get(h); err != nil {
				return out, opt, err
			}
		}
		if sum, weight, err = setup.Combine(a.Round, agg, shares, st.Threshold); err != nil {
			return out, opt, fmt.Errorf("combining decryption shares: %w", err)
		}
	} else if sum, weight, err = aggregation.DecodeSum(agg, dim); err != nil {
		return out, opt, err
	}
	if math.Abs(weight-float64(a.Weight)) > 0.5 {
		return out, opt, fmt.Errorf("decrypted total weight %.3f, contributors declared %d", weight, a.Weight)
	}
	parentFile, err := c.models.Get(a.Parent.Hash)
	if err != nil {
		return out, opt, err
	}
	spec, parent, err := model.Decode(parentFile)
	if err != nil {
		return out, opt, err
	}
	var before []byte
	if a.OptimizerBefore.Hash != (audit.Hash{}) {
		if before, err = c.models.Get(a.OptimizerBefore.Hash); err != nil {
			return out, opt, err
		}
	}
	next, after, err := aggregation.NextModel(st.Strategy, parent, before, sum, weight)
	if err != nil {
		return out, opt, err
	}
	file, err := model.Encode(spec, next)
	if err != nil {
		return out, opt, err
	}
	if out.Hash, err = c.models.Put(file); err != nil {
		return out, opt, err
	}
	if opt.Hash, err = c.models.Put(after); err != nil {
		return out, opt, err
	}
	out.Size, opt.Size = uint64(len(file)), uint64(len(after))
	return out, opt, nil
}

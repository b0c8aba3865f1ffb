package train

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/fedledger/fedledger/internal/model"
)

// Dataset is a binary-classification table: X[i] holds sample i's features
// in the order of Features, Y[i] is 0 or 1.
type Dataset struct {
	Name     string
	Features []string
	X        [][]float64
	Y        []float64
	// Preprocessing records how the data was loaded (nil for a dataset
	// built in memory); a train/test pair shares one.
	Preprocessing *Preprocessing
}

// Len is the number of samples.
func (d *Dataset) Len() int { return len(d.Y) }

// split shuffles rows with seed and cuts them into train (floor(n *
// trainFrac) rows) and test.
func split(name string, features []string, x [][]float64, y []float64, trainFrac float64, seed int64) (*Dataset, *Dataset) {
	perm := rand.New(rand.NewSource(seed)).Perm(len(y))
	nTrain := int(math.Floor(float64(len(y)) * trainFrac))
	tr := &Dataset{Name: name + "/train", Features: features}
	te := &Dataset{Name: name + "/test", Features: features}
	for i, p := range perm {
		d := te
		if i < nTrain {
			d = tr
		}
		d.X = append(d.X, x[p])
		d.Y = append(d.Y, y[p])
	}
	return tr, te
}

// standardize rescales every feature of train and test with train's mean and
// (population) standard deviation, and returns them. A constant feature is
// only centred (its std is returned as 1). The explicit float64 conversion
// keeps the product from being fused into an FMA on architectures that
// have one, so the statistics, which a data manifest records, are the same
// on every platform.
func standardize(train, test *Dataset) (means, stds []float64) {
	nf := len(train.Features)
	means, stds = make([]float64, nf), make([]float64, nf)
	for j := 0; j < nf; j++ {
		var mean, sq float64
		for _, row := range train.X {
			mean += row[j]
		}
		mean /= float64(train.Len())
		for _, row := range train.X {
			d := row[j] - mean
			sq += float64(d * d)
		}
		std := math.Sqrt(sq / float64(train.Len()))
		if std < 1e-12 {
			std = 1
		}
		for _, d := range []*Dataset{train, test} {
			for _, row := range d.X {
				row[j] = (row[j] - mean) / std
			}
		}
		means[j], stds[j] = mean, std
	}
	return means, stds
}

func (d *Dataset) check(spec model.Spec) error {
	if d == nil || d.Len() == 0 {
		return fmt.Errorf("train: empty dataset")
	}
	if len(d.X) != len(d.Y) {
		return fmt.Errorf("train: dataset %s has %d rows of features and %d labels", d.Name, len(d.X), len(d.Y))
	}
	for i, row := range d.X {
		if len(row) != spec.Inputs {
			return fmt.Errorf("train: dataset %s row %d has %d features, model %s wants %d", d.Name, i, len(row), spec, spec.Inputs)
		}
	}
	return nil
}

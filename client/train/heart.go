package train

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/fedledger/fedledger/internal/datasets/heart"
)

// Hospitals are the four UCI heart-disease sites, by client id.
var Hospitals = []string{"cleveland", "hungary", "switzerland", "va"}

var hospitalNames = map[string]string{
	"cleveland":   "Cleveland",
	"hungary":     "Hungary",
	"switzerland": "Switzerland",
	"va":          "VA Long Beach",
}

// HospitalName is the display name of a heart-disease hospital id.
func HospitalName(id string) string {
	if n, ok := hospitalNames[id]; ok {
		return n
	}
	return id
}

// HeartFeatures are the 13 model inputs of the heart-disease data, in order.
var HeartFeatures = []string{
	"age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
	"cp=2", "cp=3", "cp=4", "restecg=1", "restecg=2",
}

// HeartSplitSeed is the seed of the standard per-hospital train/test split.
const HeartSplitSeed = 42

// LoadHeart loads one hospital's processed UCI heart-disease file with the
// standard cross-silo preprocessing (FLamby's Fed-Heart-Disease):
//
//   - drop the slope, ca and thal columns (mostly missing outside Cleveland);
//   - drop every row with a missing value ("?") in the remaining columns;
//   - label = num > 0 (any angiographic disease);
//   - one-hot encode cp (levels 1-4) and restecg (levels 0-2), dropping the
//     first level, which with the 8 numeric columns gives 13 features; the
//     levels are global so every hospital has the same columns;
//   - shuffle with seed and keep floor(66%) of rows for training, the rest
//     for testing;
//   - standardise every feature with this hospital's training mean and
//     standard deviation.
//
// With seed = HeartSplitSeed the train/test sizes are Cleveland 199/104,
// Hungary 172/89, Switzerland 30/16 and VA Long Beach 85/45.
func LoadHeart(hospital string, seed int64) (train, test *Dataset, err error) {
	raw, err := heart.File(hospital)
	if err != nil {
		return nil, nil, err
	}
	file := heart.Files[hospital]
	var xs [][]float64
	var ys []float64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	line, rowsRead := 0, 0
rows:
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		rowsRead++
		f := strings.Split(text, ",")
		if len(f) != 14 {
			return nil, nil, fmt.Errorf("train: %s:%d: %d columns, want 14", file, line, len(f))
		}
		v := make([]float64, 14)
		for _, c := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13} {
			if strings.TrimSpace(f[c]) == "?" {
				continue rows
			}
			if v[c], err = strconv.ParseFloat(strings.TrimSpace(f[c]), 64); err != nil {
				return nil, nil, fmt.Errorf("train: %s:%d: column %d: %v", file, line, c+1, err)
			}
		}
		cp, restecg := int(v[2]), int(v[6])
		if cp < 1 || cp > 4 || restecg < 0 || restecg > 2 {
			return nil, nil, fmt.Errorf("train: %s:%d: cp=%v restecg=%v out of range", file, line, v[2], v[6])
		}
		x := []float64{v[0], v[1], v[3], v[4], v[5], v[7], v[8], v[9],
			b2f(cp == 2), b2f(cp == 3), b2f(cp == 4), b2f(restecg == 1), b2f(restecg == 2)}
		xs = append(xs, x)
		ys = append(ys, b2f(v[13] > 0))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("train: %s: %w", file, err)
	}
	train, test = split(hospital, HeartFeatures, xs, ys, 0.66, seed)
	prep := heartPreprocessing(seed)
	prep.Rows = RowCounts{Read: rowsRead, Dropped: rowsRead - len(ys), Train: train.Len(), Test: test.Len(),
		TrainPositive: positives(train), TestPositive: positives(test)}
	prep.Mean, prep.Std = standardize(train, test)
	train.Preprocessing, test.Preprocessing = prep, prep
	return train, test, nil
}

// heartPreprocessing describes LoadHeart's fixed preprocessing; its
// features are HeartFeatures.
func heartPreprocessing(seed int64) *Preprocessing {
	p := &Preprocessing{LabelColumn: "num", PositiveLabels: []string{"1", "2", "3", "4"}, Missing: "drop",
		MissingTokens: []string{"?"}, TestFraction: 0.34, SplitSeed: seed, Standardize: true}
	for _, n := range []string{"age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak"} {
		p.Columns = append(p.Columns, Column{Name: n, Kind: KindNumeric})
	}
	p.Columns = append(p.Columns, Column{Name: "cp", Kind: KindCategorical, Categories: []string{"1", "2", "3", "4"}},
		Column{Name: "restecg", Kind: KindCategorical, Categories: []string{"0", "1", "2"}})
	return p
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

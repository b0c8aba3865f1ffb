package anomaly

import "math"

// selectKth partially reorders a so that a[k] holds the k-th smallest value
// (0-based), every a[i] with i < k is <= a[k] and every a[i] with i > k is
// >= a[k]; it returns a[k]. It is Hoare's FIND (as written by Wirth), which
// is linear on average and copes well with many equal values (counts that
// are mostly zero). a must not contain NaN.
func selectKth(a []float64, k int) float64 {
	l, r := 0, len(a)-1
	for l < r {
		x := a[k]
		i, j := l, r
		for {
			for a[i] < x {
				i++
			}
			for x < a[j] {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
			if i > j {
				break
			}
		}
		if j < k {
			l = i
		}
		if k < i {
			r = j
		}
	}
	return a[k]
}

// medianInPlace returns the median of a (the mean of the two middle values
// when len(a) is even), reordering a. a must be non-empty and NaN-free.
func medianInPlace(a []float64) float64 {
	n := len(a)
	k := n / 2
	hi := selectKth(a, k)
	if n%2 == 1 {
		return hi
	}
	lo := a[0]
	for _, v := range a[1:k] {
		if v > lo {
			lo = v
		}
	}
	m := (lo + hi) / 2
	if math.IsInf(m, 0) { // lo+hi overflowed
		m = lo/2 + hi/2
	}
	return m
}

// medianMAD returns the median of a and the median absolute deviation from
// it (unscaled). It overwrites a.
func medianMAD(a []float64) (median, mad float64) {
	median = medianInPlace(a)
	for i, v := range a {
		a[i] = math.Abs(v - median)
	}
	return median, medianInPlace(a)
}

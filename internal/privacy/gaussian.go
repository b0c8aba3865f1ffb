package privacy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
)

// gaussianBuf is how many random bytes a Gaussian reads at a time.
const gaussianBuf = 4096

// Gaussian draws normally distributed noise from crypto/rand.
//
// It reads crypto/rand in blocks of 4 KiB, turns each 8 bytes into a
// uniform variate with 53 random bits, and turns pairs of uniforms into
// pairs of independent standard normals with the Marsaglia polar method.
// Every variate thus comes from the operating system's CSPRNG; no
// user-space generator or seed is involved.
//
// The transform works in ordinary floating point. Like every such sampler
// it is not hardened against attacks on the low-order bits of released
// floating-point values (Mironov, CCS 2012; Jin et al., IEEE S&P 2022);
// releases that need that protection should round the noisy values to a
// coarse grid or use a discrete Gaussian.
//
// The zero value is ready to use. A Gaussian is safe for use by one
// goroutine at a time; give each goroutine its own.
type Gaussian struct {
	buf      [gaussianBuf]byte
	unread   int // the last unread bytes of buf are still unused
	spare    float64
	hasSpare bool
}

// NewGaussian returns a Gaussian noise source.
func NewGaussian() *Gaussian {
	return new(Gaussian)
}

// Normal returns a standard normal variate, N(0, 1).
func (g *Gaussian) Normal() float64 {
	if g.hasSpare {
		g.hasSpare = false
		return g.spare
	}
	for {
		u, v := g.uniform(), g.uniform()
		s := u*u + v*v
		if s >= 1 || s == 0 {
			continue
		}
		f := math.Sqrt(-2 * math.Log(s) / s)
		g.spare, g.hasSpare = v*f, true
		return u * f
	}
}

// Add adds independent N(0, std²) noise to each element of v. It panics if
// std is negative, infinite or NaN; std = 0 leaves v unchanged.
func (g *Gaussian) Add(v []float64, std float64) {
	if !(std >= 0) || math.IsInf(std, 1) {
		panic(fmt.Sprintf("privacy: noise std = %v, want finite and >= 0", std))
	}
	if std == 0 {
		return
	}
	for i := range v {
		v[i] += std * g.Normal()
	}
}

// uniform returns a uniform variate in [-1, 1) with 53 random bits.
func (g *Gaussian) uniform() float64 {
	if g.unread < 8 {
		// Since Go 1.24, crypto/rand.Read always fills the buffer and
		// never returns an error (it crashes the program instead).
		_, _ = rand.Read(g.buf[:])
		g.unread = len(g.buf)
	}
	off := len(g.buf) - g.unread
	g.unread -= 8
	bits := binary.LittleEndian.Uint64(g.buf[off:]) >> 11
	return float64(bits)*0x1p-52 - 1
}

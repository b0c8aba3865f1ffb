package cluster

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fedledger/fedledger/internal/anomaly"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Access anomalies. Every call a node authorizes is counted by the
// caller's identity and RPC (fedledger_audit_access_total) and logged at
// debug level. Per identity, the calls in each window (AccessWindow, one
// minute by default) are compared with that identity's own past windows
// (a robust z-score: internal/anomaly); a window far above them, such as
// an observer suddenly exporting every study, is flagged once: a warning
// in the node's log and fedledger_audit_access_anomalies_total. A flag is
// the node's own observation, not a record on the log.

// accessHistory is how many past windows each identity's reference keeps.
const accessHistory = 60

// accessWatch counts each identity's calls per window and flags a window
// far above the identity's history.
type accessWatch struct {
	mu      sync.Mutex
	window  time.Duration
	start   time.Time // of the current window
	counts  map[string]int
	flagged map[string]bool // flagged in the current window
	history map[string][]float64
	z       anomaly.RobustZ
	onFlag  func(id string, calls int, reason string)
}

// newAccessWatch flags with z ≥ 6 against at least five past windows, the
// scale floored at minScale calls (so a quiet identity's few calls do not
// make a handful look wild).
func newAccessWatch(window time.Duration, minScale float64, now time.Time, onFlag func(string, int, string)) *accessWatch {
	return &accessWatch{window: window, start: now, counts: map[string]int{}, flagged: map[string]bool{}, history: map[string][]float64{},
		z: anomaly.RobustZ{Features: []string{"calls_per_window"}, MinScale: []float64{minScale}, MinHistory: 5}, onFlag: onFlag}
}

// record counts one call by p at now and reports whether it made p's
// window unusual (flagged once per window).
func (w *accessWatch) record(p tlsutil.Peer, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now)
	w.counts[p.ID]++
	if _, known := w.history[p.ID]; !known {
		w.history[p.ID] = nil
	}
	if w.flagged[p.ID] {
		return false
	}
	n := w.counts[p.ID]
	hist := make([]anomaly.Observation, 0, len(w.history[p.ID]))
	for i, v := range w.history[p.ID] {
		hist = append(hist, anomaly.Observation{Site: p.ID, Round: uint64(i), Values: []float64{v}})
	}
	flags, err := w.z.Score(hist, []anomaly.Observation{{Site: p.ID, Round: uint64(len(hist)), Values: []float64{float64(n)}}})
	if err != nil || len(flags) == 0 || float64(n) < median(w.history[p.ID]) {
		return false // only more calls than usual are unusual
	}
	w.flagged[p.ID] = true
	if w.onFlag != nil {
		w.onFlag(p.ID, n, fmt.Sprintf("%d calls in %v as %s, far above its usual (%s)", n, w.window, p.Role, flags[0].Reason))
	}
	return true
}

// roll closes the windows that have ended by now: each known identity's
// count (0 if it made no call) joins its history.
func (w *accessWatch) roll(now time.Time) {
	for closed := 0; now.Sub(w.start) >= w.window; closed++ {
		if closed == accessHistory { // idle for longer than the history: skip ahead
			w.start = now.Add(-now.Sub(w.start) % w.window)
			break
		}
		for id := range w.history {
			h := append(w.history[id], float64(w.counts[id]))
			if len(h) > accessHistory {
				h = h[len(h)-accessHistory:]
			}
			w.history[id] = h
		}
		clear(w.counts)
		clear(w.flagged)
		w.start = w.start.Add(w.window)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

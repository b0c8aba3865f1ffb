package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// BenchmarkClusterAppend measures appends to a three-node cluster over
// real TCP + mutual TLS on loopback, bbolt with fsync on every node:
// latency of sequential appends (p50, p99) and throughput with 16
// concurrent submitters (one study each, since a study's rounds are
// sequential). The baseline, measured in the same run, is the same
// records applied to an in-memory Ledger (signature and rule checks, no
// replication, no disk).
func BenchmarkClusterAppend(b *testing.B) {
	const sequential, writers, perWriter = 300, 16, 40
	c := newCluster(b, 3, nil)
	lead := c.leader()
	// Each study is built whole by the audittest builder under its own id:
	// the hospitals' signatures cover the study id, so a record cannot be
	// renamed after it is built.
	studyEnvs := func(name string, rounds int) [][]byte {
		sb := c.PKI.NewBuilder(audittest.Options{ID: name, Rounds: uint32(rounds)}, time.Now().UnixNano())
		envs := [][]byte{audittest.Leaf(c.Admin, sb.Study)}
		for _, rec := range sb.Chain(rounds, "site-a", "site-b") {
			envs = append(envs, audittest.Leaf(c.Coord, rec))
		}
		return envs
	}
	for b.Loop() {
		name := fmt.Sprintf("seq-%d", time.Now().UnixNano())
		envs := studyEnvs(name, sequential)
		// Baseline: in-memory ledger.
		mem := audit.NewLedger(c.CA.Pool())
		t0 := time.Now()
		for _, e := range envs {
			if _, err := mem.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
		memPer := time.Since(t0) / time.Duration(len(envs))
		// Sequential appends through the leader.
		lat := make([]time.Duration, 0, len(envs))
		for _, e := range envs {
			t := time.Now()
			if _, err := c.nodes[lead].Append(context.Background(), e); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		// Concurrent writers, each on its own study, through all nodes.
		var wg sync.WaitGroup
		t0 = time.Now()
		for w := 0; w < writers; w++ {
			name := fmt.Sprintf("par-%d-%d", w, time.Now().UnixNano())
			envs := studyEnvs(name, perWriter)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, e := range envs {
					if _, err := c.nodes[w%3].Append(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		tput := float64(writers*(perWriter+1)) / time.Since(t0).Seconds()
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms")
		b.ReportMetric(tput, "appends/s")
		b.ReportMetric(float64(p50)/float64(memPer), "x_p50_vs_inmemory")
	}
}

package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// BenchmarkVerifyBundle measures VerifyBundle on a 10,000-round bundle
// (1,000 with -short) and reports it as a ratio against a baseline measured
// in the same run: only checking each record's Ed25519 signature.
func BenchmarkVerifyBundle(b *testing.B) {
	rounds := 10000
	if testing.Short() {
		rounds = 1000
	}
	p := newPKI(b)
	l := NewLedger(p.ca.Pool())
	t0 := time.Now().UnixNano()
	study := &Record{Kind: KindStudyCreated, StudyID: "s", OutputModel: model(0), ApprovedSites: []string{"a", "b"},
		MinContributors: 2, TimestampUnixNs: t0, SubmitterID: "admin"}
	if _, err := l.Apply(Must(Sign(p.admin, study)).Marshal()); err != nil {
		b.Fatal(err)
	}
	prev := model(0)
	for r := 1; r <= rounds; r++ {
		out := Hash{byte(r), byte(r >> 8), 1}
		rec := &Record{Kind: KindRoundCompleted, StudyID: "s", Round: uint64(r), ParentModel: prev, OutputModel: out,
			Contributions:   []Contribution{{SiteID: "a"}, {SiteID: "b"}},
			TimestampUnixNs: t0 + int64(r), SubmitterID: "coord"}
		if _, err := l.Apply(Must(Sign(p.coord, rec)).Marshal()); err != nil {
			b.Fatal(err)
		}
		prev = out
	}
	n, root, _ := l.Root()
	s, v := noteKeys(b, "node-1")
	bundle := &Bundle{Checkpoint: Must(SignCheckpoint(Checkpoint{Origin: "o", Size: n, Root: root}, s))}
	for i := int64(0); i < n; i++ {
		bundle.Leaves = append(bundle.Leaves, Must(l.Log().Leaf(i)))
	}
	trust := Trust{Roots: p.ca.Pool(), Keys: note.VerifierList(v), Quorum: 1}

	baseline := func() {
		for _, leaf := range bundle.Leaves {
			e, _ := UnmarshalEnvelope(leaf)
			c, _ := x509.ParseCertificate(e.CertDER)
			if !ed25519.Verify(c.PublicKey.(ed25519.PublicKey), signedMessage(e.Body), e.Signature) {
				b.Fatal("baseline signature")
			}
		}
	}
	var base, full time.Duration
	for b.Loop() {
		t := time.Now()
		baseline()
		base += time.Since(t)
		t = time.Now()
		lin, err := VerifyBundle(bundle, trust, "s", prev)
		full += time.Since(t)
		if err != nil || len(lin.Steps) != rounds {
			b.Fatalf("verify: %v", err)
		}
	}
	b.ReportMetric(float64(full)/float64(b.N)/1e6, "ms/verify")
	b.ReportMetric(float64(base)/float64(b.N)/1e6, "ms/sigonly")
	b.ReportMetric(float64(full)/float64(base), "x-vs-sigonly")
	b.ReportMetric(float64(rounds), "rounds")
}

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
	sign := func(id *tlsutil.Identity, rec *Record) []byte { return Must(Sign(id, rec)).Marshal() }
	study := func(name string) []byte {
		r := *c.study
		r.StudyID = name
		return sign(c.admin, &r)
	}
	rounds := func(name string, n int) [][]byte {
		var out [][]byte
		parent := model(0)
		for r := 1; r <= n; r++ {
			rec := c.round(uint64(r), parent, Hash{byte(r), byte(r >> 8), 7}, "site-a", "site-b")
			rec.StudyID = name
			out = append(out, sign(c.coord, rec))
			parent = rec.OutputModel
		}
		return out
	}
	for b.Loop() {
		name := fmt.Sprintf("seq-%d", time.Now().UnixNano())
		envs := append([][]byte{study(name)}, rounds(name, sequential)...)
		// Baseline: in-memory ledger.
		mem := NewLedger(c.ca.Pool())
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
			envs := append([][]byte{study(name)}, rounds(name, perWriter)...)
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

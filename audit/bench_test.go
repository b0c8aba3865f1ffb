package audit

import (
	"crypto/ed25519"
	"crypto/x509"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
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
			Contributions:   []Contribution{{Site: "a"}, {Site: "b"}},
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
			if !ed25519.Verify(c.PublicKey.(ed25519.PublicKey), RecordMessage(e.Body), e.Signature) {
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

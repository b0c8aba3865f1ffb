package audit_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// BenchmarkVerifyBundle measures VerifyBundle on a 10,000-round bundle
// (1,000 with -short) of a secure study (three contributors, t = 2
// decryption shares and countersignatures per round) and reports it as a
// ratio against a baseline measured in the same run: only checking each
// record's envelope signature.
func BenchmarkVerifyBundle(b *testing.B) {
	rounds := 10000
	if testing.Short() {
		rounds = 1000
	}
	p := audittest.NewPKI(b)
	sb := p.NewBuilder(audittest.Options{Rounds: uint32(rounds), Threshold: 2}, time.Now().UnixNano())
	leaves := [][]byte{audittest.Leaf(p.Admin, sb.Study), audittest.Leaf(p.Coord, sb.KeySetup)}
	for _, r := range sb.Chain(rounds, audittest.Sites...) {
		leaves = append(leaves, audittest.Leaf(p.Coord, r))
	}
	l := audit.NewLedger(p.CA.Pool())
	for _, leaf := range leaves {
		if _, err := l.Apply(leaf); err != nil {
			b.Fatal(err)
		}
	}
	n, root, _ := l.Root()
	s, v := audittest.NoteKeys(b, "node-1")
	bundle := &audit.Bundle{Checkpoint: audittest.Must(audit.SignCheckpoint(audit.Checkpoint{Origin: "o", Size: n, Root: root}, s)), Leaves: leaves}
	trust := audit.Trust{Roots: p.CA.Pool(), Keys: note.VerifierList(v), Quorum: 1}
	final := audittest.Output(uint64(rounds))

	baseline := func() {
		for _, leaf := range bundle.Leaves {
			e, _ := audit.UnmarshalEnvelope(leaf)
			c, _ := x509.ParseCertificate(e.CertDER)
			if !ed25519.Verify(c.PublicKey.(ed25519.PublicKey), audit.RecordMessage(e.Body), e.Signature) {
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
		lin, err := audit.VerifyBundle(bundle, trust, "heart", final)
		full += time.Since(t)
		if err != nil || len(lin.Steps) != rounds {
			b.Fatalf("verify: %v", err)
		}
	}
	b.ReportMetric(float64(full)/float64(b.N)/1e6, "ms/verify")
	b.ReportMetric(float64(base)/float64(b.N)/1e6, "ms/sigonly")
	b.ReportMetric(float64(full)/float64(base), "x-vs-sigonly")
	b.ReportMetric(float64(rounds), "rounds")
	b.ReportMetric(float64(len(bundle.Marshal()))/float64(rounds), "bytes/round")
}

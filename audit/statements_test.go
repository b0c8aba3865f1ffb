package audit

import (
	"bytes"
	"testing"
)

// TestStatementsAreDomainSeparated: no two statements of different kinds,
// or of the same kind with one field changed, produce the same bytes, and
// no statement is a prefix of another kind's (length prefixes and domain
// strings do that).
func TestStatementsAreDomainSeparated(t *testing.T) {
	h, g := Hash{1}, Hash{2}
	c := Contribution{Site: "a", UpdateHash: h, Samples: 3, DataManifest: g}
	o := Outcome{Study: "s", Round: 1, Parent: h, Aggregate: g, Output: h, OptimizerBefore: g, OptimizerAfter: h}
	holders := []KeyHolder{{Site: "a", Point: 1}, {Site: "b", Point: 2}}
	variants := func(f func(*Contribution)) []byte { x := c; f(&x); return x.Message("s", 1, h) }
	msgs := map[string][]byte{
		"record":                RecordMessage([]byte("body")),
		"contribution":          c.Message("s", 1, h),
		"contribution/study":    c.Message("t", 1, h),
		"contribution/round":    c.Message("s", 2, h),
		"contribution/parent":   c.Message("s", 1, g),
		"contribution/site":     variants(func(x *Contribution) { x.Site = "b" }),
		"contribution/update":   variants(func(x *Contribution) { x.UpdateHash = g }),
		"contribution/samples":  variants(func(x *Contribution) { x.Samples = 4 }),
		"contribution/manifest": variants(func(x *Contribution) { x.DataManifest = h }),
		"key share":             KeyShareMessage("s", "a", 1, h[:], g),
		"key share/site":        KeyShareMessage("s", "b", 1, h[:], g),
		"key share/point":       KeyShareMessage("s", "a", 2, h[:], g),
		"key setup":             KeySetupMessage("s", "p", 2, h, holders),
		"key setup/t":           KeySetupMessage("s", "p", 3, h, holders),
		"key setup/holders":     KeySetupMessage("s", "p", 2, h, holders[:1]),
		"key setup/params":      KeySetupMessage("s", "q", 2, h, holders),
		"decryption":            DecryptionShare{Site: "a", ShareHash: h}.Message("s", 1, g, h),
		"decryption/manifest":   DecryptionShare{Site: "a", ShareHash: h}.Message("s", 1, g, g),
		"decryption/site":       DecryptionShare{Site: "b", ShareHash: h}.Message("s", 1, g, h),
		"countersign":           CountersignMessage("a", o),
		"sketch":                Sketch{Site: "a", Values: h[:]}.Message("s", 1, g, h),
		"evaluation":            Evaluation{Site: "a", Metrics: []Metric{{"x", 1}}}.Message("s", 1, h),
		"evaluation/value":      Evaluation{Site: "a", Metrics: []Metric{{"x", 2}}}.Message("s", 1, h),
		"evaluation/name":       Evaluation{Site: "a", Metrics: []Metric{{"y", 1}}}.Message("s", 1, h),
		"evaluation/parent":     Evaluation{Site: "a", Metrics: []Metric{{"x", 1}}}.Message("s", 1, g),
		"evaluation/site":       Evaluation{Site: "b", Metrics: []Metric{{"x", 1}}}.Message("s", 1, h),
		"sketch/site":           Sketch{Site: "b", Values: h[:]}.Message("s", 1, g, h),
		"sketch/aggregate":      Sketch{Site: "a", Values: h[:]}.Message("s", 1, h, h),
		"sketch/values":         Sketch{Site: "a", Values: g[:]}.Message("s", 1, g, h),
		"countersign/site":      CountersignMessage("b", o),
	}
	o2 := o
	o2.OptimizerAfter = g
	msgs["countersign/optimizer"] = CountersignMessage("a", o2)
	seen := map[string]string{}
	for name, m := range msgs {
		if prev, dup := seen[string(m)]; dup {
			t.Fatalf("%s and %s are the same message", name, prev)
		}
		seen[string(m)] = name
	}
	domains := []string{domainRecord, domainContribution, domainKeyShare, domainKeySetup, domainDecryption, domainCountersign, domainManifest, domainSketch, domainEvaluation}
	for i, a := range domains {
		for j, b := range domains {
			if i != j && bytes.HasPrefix([]byte(a), []byte(b)) {
				t.Fatalf("domain %q is a prefix of %q", b, a)
			}
		}
	}
	// The manifest digest covers every field but the signatures.
	signed := c
	signed.Signature = []byte("sig")
	if ManifestDigest("s", 1, h, []Contribution{c}) != ManifestDigest("s", 1, h, []Contribution{signed}) {
		t.Fatal("the manifest digest depends on signatures")
	}
	if ManifestDigest("s", 1, h, []Contribution{c}) == ManifestDigest("s", 1, h, []Contribution{c, c}) {
		t.Fatal("the manifest digest ignores a repeated contribution")
	}
}

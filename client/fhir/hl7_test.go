package fhir

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// hl7Line reads a testdata/hl7 fixture as one NDJSON line.
func hl7Line(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/hl7", name))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return buf.String()
}

// decodeFixture decodes a fixture with the loader's own line decoder.
func decodeFixture(t *testing.T, name, typ string, v resourceLine) {
	t.Helper()
	r := NewReader(strings.NewReader(hl7Line(t, name)), name)
	line, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeLine(r, line, typ, v); err != nil {
		t.Fatal(err)
	}
}

func TestHL7Fixtures(t *testing.T) {
	var p patientLine
	decodeFixture(t, "patient-example.json", "Patient", &p)
	if deref(p.Id) != "example" || p.Gender == nil || *p.Gender != fhir.AdministrativeGenderMale || deref(p.BirthDate) != "1974-12-25" ||
		len(p.Name) != 3 || p.Name[0].Given[1] != "James" || deref(p.Contact[0].Name.Family) != "du Marché" ||
		p.DeceasedBoolean == nil || *p.DeceasedBoolean || p.Telecom[1].Rank == nil || *p.Telecom[1].Rank != 1 {
		t.Errorf("patient-example: %+v", p.Patient)
	}

	var w observationLine
	decodeFixture(t, "observation-example.json", "Observation", &w)
	if w.Status == nil || *w.Status != fhir.ObservationStatusFinal || len(w.Code.Coding) != 4 || deref(w.EffectiveDateTime) != "2016-03-28" ||
		w.ValueQuantity == nil || string(w.ValueQuantity.Value) != "185" || deref(w.ValueQuantity.Code) != "[lb_av]" {
		t.Errorf("observation-example: %+v", w)
	}
	if id, ok := patientRef(w.Subject); !ok || id != "example" {
		t.Errorf("observation-example subject %v", w.Subject)
	}

	var bp observationLine
	decodeFixture(t, "observation-example-bloodpressure.json", "Observation", &bp)
	if len(bp.Component) != 2 || bp.ValueQuantity != nil || string(bp.Component[0].ValueQuantity.Value) != "107" ||
		deref(bp.Component[1].Code.Coding[0].Code) != "8462-4" || len(bp.Component[0].Interpretation) != 1 || bp.Meta == nil {
		t.Errorf("observation-example-bloodpressure: %+v", bp)
	}

	var c conditionLine
	decodeFixture(t, "condition-example.json", "Condition", &c)
	if !hasCoding(c.Code, SystemSNOMED, "39065001") || !hasCoding(c.VerificationStatus, conditionVerSystem, "confirmed") ||
		deref(c.OnsetDateTime) != "2012-05-24" || len(c.BodySite) != 1 {
		t.Errorf("condition-example: %+v", c.Condition)
	}

	for name, want := range map[string]struct {
		d    decision
		skip string
	}{
		"consent-example-basic.json": {skip: "Consent: scope is not research"},
		"consent-research-deny.json": {d: deny},
	} {
		var k consentLine
		decodeFixture(t, name, "Consent", &k)
		pid, d, at, skip, err := researchDecision(&k)
		if err != nil || d != want.d || skip != want.skip || (skip == "" && (pid != "example" || at == noTime)) {
			t.Errorf("%s: %q %v %v %q %v, want %v %q", name, pid, d, at, skip, err, want.d, want.skip)
		}
	}
}

// TestHL7Load loads an export made of the fixtures: an age from the
// example patient's birthDate, a weight converted from pounds, the
// systolic pressure from a panel's component, a label from the burn.
func TestHL7Load(t *testing.T) {
	m := &Mapping{
		ReferenceDate: "2016-03-28",
		Label:         Label{Name: "burn", Condition: []string{SystemSNOMED + "|39065001"}},
		Columns: []Column{
			{Name: "age", Type: TypeNumeric, Patient: PatientAge},
			{Name: "male", Type: TypeBoolean, Patient: PatientGender, TrueCodes: []string{"male"}, FalseCodes: []string{"female"}},
			{Name: "weight", Type: TypeNumeric, Observation: []string{SystemLOINC + "|29463-7"}, Unit: "kg", Convert: map[string]float64{"[lb_av]": 0.45359237}},
			{Name: "sbp", Type: TypeNumeric, Observation: []string{SystemLOINC + "|8480-6"}, Unit: "mm[Hg]"},
			{Name: "dbp", Type: TypeNumeric, Observation: []string{SystemLOINC + "|8462-4"}, Unit: "mm[Hg]"},
		},
		Split: Split{TestFraction: 0.5},
	}
	files := map[string]string{
		"Patient":     lines(hl7Line(t, "patient-example.json")),
		"Observation": lines(hl7Line(t, "observation-example.json"), hl7Line(t, "observation-example-bloodpressure.json")),
		"Condition":   lines(hl7Line(t, "condition-example.json")),
		"Consent":     lines(hl7Line(t, "consent-example-basic.json")),
	}
	tab, rep, err := Load(writeExport(t, files), m)
	if err != nil {
		t.Fatal(err)
	}
	r := row(t, tab, "example")
	for k, v := range map[string]float64{"age": 41, "male": 1, "sbp": 107, "dbp": 60, "label": 1} {
		if r[k] != v {
			t.Errorf("%s = %v, want %v", k, r[k], v)
		}
	}
	if math.Abs(r["weight"]-83.91458845) > 1e-9 {
		t.Errorf("weight %v kg, want 185 lb = 83.91458845 kg", r["weight"])
	}
	if rep.ExcludedByConsent != 0 || rep.Skipped["Consent: scope is not research"] != 1 {
		t.Errorf("report %+v", rep)
	}

	files["Consent"] += lines(hl7Line(t, "consent-research-deny.json"))
	tab, rep, err = Load(writeExport(t, files), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.PatientIDs) != 0 || rep.ExcludedByConsent != 1 {
		t.Errorf("with the research denial: rows %v, excluded %d", tab.PatientIDs, rep.ExcludedByConsent)
	}
}

package fhir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

func patientJSON(id, gender, birth string) string {
	s := fmt.Sprintf(`{"resourceType":"Patient","id":%q`, id)
	if gender != "" {
		s += fmt.Sprintf(`,"gender":%q`, gender)
	}
	if birth != "" {
		s += fmt.Sprintf(`,"birthDate":%q`, birth)
	}
	return s + "}"
}

// obs is an Observation of one LOINC code with a value (a JSON fragment
// such as `"valueBoolean":true`) at a time.
func obs(id, patient, system, code, when, value string) string {
	s := fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final","code":{"coding":[{"system":%q,"code":%q}]},"subject":{"reference":"Patient/%s"}`, id, system, code, patient)
	if when != "" {
		s += fmt.Sprintf(`,"effectiveDateTime":%q`, when)
	}
	if value != "" {
		s += "," + value
	}
	return s + "}"
}

func qty(v, unit string) string {
	return fmt.Sprintf(`"valueQuantity":{"value":%s,"unit":%q,"system":"http://unitsofmeasure.org","code":%q}`, v, unit, unit)
}

func coded(system, code string) string {
	return fmt.Sprintf(`"valueCodeableConcept":{"coding":[{"system":%q,"code":%q}]}`, system, code)
}

func cond(id, patient, system, code, extra string) string {
	s := fmt.Sprintf(`{"resourceType":"Condition","id":%q,"code":{"coding":[{"system":%q,"code":%q}]},"subject":{"reference":"Patient/%s"}`, id, system, code, patient)
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func consentJSON(id, patient, scope, status, typ, when string) string {
	s := fmt.Sprintf(`{"resourceType":"Consent","id":%q,"status":%q,"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":%q}]},"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/%s"}`, id, status, scope, patient)
	if when != "" {
		s += fmt.Sprintf(`,"dateTime":%q`, when)
	}
	if typ != "" {
		s += fmt.Sprintf(`,"provision":{"type":%q}`, typ)
	}
	return s + "}"
}

const interp = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

func mustMapping(t testing.TB, path string) *Mapping {
	t.Helper()
	m, err := LoadMapping(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// row returns a patient's row as column -> value.
func row(t *testing.T, tab *Table, id string) map[string]float64 {
	t.Helper()
	for i, p := range tab.PatientIDs {
		if p == id {
			out := map[string]float64{"label": tab.Y[i]}
			for j, c := range tab.Columns {
				out[c.Name] = tab.X[i][j]
			}
			return out
		}
	}
	t.Fatalf("patient %s is not in the table (rows %v)", id, tab.PatientIDs)
	return nil
}

func TestLoadCombines(t *testing.T) {
	m := mustMapping(t, "testdata/mapping-good.yaml")
	man := writeExport(t, map[string]string{
		"Patient": lines(
			patientJSON("a", "male", "1970-06-15"),
			"",
			patientJSON("b", "female", "1980-01-01"),
			patientJSON("c", "other", "1990-02-03"), // gender other: missing male
			patientJSON("d", "female", "2001"),      // age ambiguous at 2020-01-01? no: 18 or 19
		),
		"Observation": lines(
			obs("a1", "a", SystemLOINC, "8480-6", "2019-05-01", qty("120", "mm[Hg]")),
			obs("a2", "a", SystemLOINC, "8480-6", "2019-07-01T10:00:00+02:00", qty("20", "kPa")), // 150 mm[Hg], the latest
			obs("a3", "a", SystemLOINC, "8480-6", "2019-06-01", qty("130", "mm[Hg]")),
			obs("a4", "a", SystemLOINC, "8480-6", "", qty("90", "mm[Hg]")), // no time: oldest
			`{"resourceType":"Observation","id":"a5","status":"entered-in-error","code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Patient/a"},"valueQuantity":{"value":500,"code":"mm[Hg]"}}`,
			obs("a6", "a", SystemLOINC, "72166-2", "2019-01-01", `"valueBoolean":false`),
			obs("a7", "a", SystemLOINC, "72166-2", "2018-01-01", `"valueBoolean":true`),
			obs("a8", "a", SystemLOINC, "1558-6", "2019-01-01", coded(interp, "H")),
			obs("a9", "a", SystemLOINC, "8601-7", "2019-01-01", coded(SystemSNOMED, "164873001")),
			obs("a10", "a", SystemLOINC, "8601-7", "2018-01-01", coded(SystemSNOMED, "164854000")),
			obs("a11", "a", SystemLOINC, "29463-7", "2019-01-01", qty("80", "kg")), // not mapped
			// b: systolic only as a component of a blood pressure panel
			`{"resourceType":"Observation","id":"b1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/b"},"effectiveDateTime":"2019-01-01","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"},{"system":"http://snomed.info/sct","code":"271649006"}]},"valueQuantity":{"value":110,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":70,"code":"mm[Hg]"}}]}`,
			obs("b2", "b", SystemLOINC, "72166-2", "2019-01-01", `"valueBoolean":false`),
			obs("b3", "b", SystemLOINC, "1558-6", "2019-01-01", coded(interp, "N")),
			obs("b3b", "b", SystemLOINC, "1558-6", "2019-01-01", coded(interp, "H")), // same time: the later line wins
			obs("b4", "b", SystemLOINC, "8601-7", "2019-01-01", coded(SystemSNOMED, "428750005")),
			obs("b5", "b", SystemLOINC, "8480-6", "2019-02-01", `"dataAbsentReason":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/data-absent-reason","code":"not-performed"}]}`),
			obs("x1", "nobody", SystemLOINC, "8480-6", "2019-01-01", qty("1", "mm[Hg]")),
			`{"resourceType":"Observation","id":"g1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Group/g"},"valueQuantity":{"value":1,"code":"mm[Hg]"}}`,
		),
		"Condition": lines(
			cond("ca", "a", SystemICD10, "E11", ""),
			cond("ca2", "a", SystemICD10, "I10", ""),
			cond("cb", "b", SystemSNOMED, "44054006", `"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"refuted"}]}`),
		),
	})
	tab, rep, err := Load(man, m)
	if err != nil {
		t.Fatal(err)
	}
	a := row(t, tab, "a")
	want := map[string]float64{"label": 1, "age": 49, "male": 1, "sbp_latest": 150, "sbp_mean": (120 + 150 + 130 + 90) / 4.0,
		"sbp_max": 150, "sbp_min": 90, "smoker": 1, "glucose_high": 1, "hypertension": 1, "had_ecg": 1, "ecg": 2}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("a: %s = %v, want %v", k, a[k], v)
		}
	}
	b := row(t, tab, "b")
	want = map[string]float64{"label": 0, "age": 40, "male": 0, "sbp_latest": 110, "sbp_mean": 110, "sbp_max": 110, "sbp_min": 110,
		"smoker": 0, "glucose_high": 1, "hypertension": 0, "had_ecg": 1, "ecg": 1}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("b: %s = %v, want %v", k, b[k], v)
		}
	}
	if len(tab.PatientIDs) != 2 || rep.Rows != 2 || rep.Positive != 1 {
		t.Errorf("rows %v (report %d, %d positive), want a and b", tab.PatientIDs, rep.Rows, rep.Positive)
	}
	if rep.Patients != 4 || rep.DroppedMissing != 2 || rep.Unlinked != 1 || rep.ExcludedByConsent != 0 {
		t.Errorf("report %+v", rep)
	}
	if rep.MissingByColumn["male"] != 1 || rep.MissingByColumn["age"] != 1 || rep.MissingByColumn["sbp_latest"] != 2 {
		t.Errorf("missing by column %v", rep.MissingByColumn)
	}
	for reason, n := range map[string]int{
		"Observation: status entered-in-error":                           1,
		"Observation: subject is not a Patient reference":                1,
		"Condition: verificationStatus refuted":                          1,
		"Observation: no value":                                          4, // b5 feeds four sbp columns
		"Patient: birthDate too coarse for an age at the reference date": 1,
	} {
		if rep.Skipped[reason] != n {
			t.Errorf("skipped %q = %d, want %d (%v)", reason, rep.Skipped[reason], n, rep.Skipped)
		}
	}
	if rep.Resources["Observation"] != 19 || rep.Resources["Patient"] != 4 || rep.Resources["Condition"] != 3 {
		t.Errorf("resources %v", rep.Resources)
	}
	if len(rep.Files) != 3 || rep.Files[0].Type != "Patient" || rep.Files[1].Type != "Observation" || len(rep.SHA256) != 64 {
		t.Errorf("files %+v, sha %q", rep.Files, rep.SHA256)
	}
	if rep.TransactionTime != "2024-01-02T03:04:05Z" {
		t.Errorf("transaction time %q", rep.TransactionTime)
	}
	if tab.Record.Rows.Read != 4 || tab.Record.Rows.Dropped != 2 || tab.Record.LabelColumn != "diabetes" {
		t.Errorf("record %+v", tab.Record)
	}
}

func TestLoadHashChangesWithData(t *testing.T) {
	m := mustMapping(t, "testdata/mapping-good.yaml")
	p := lines(patientJSON("a", "male", "1970-06-15"))
	_, r1, err := Load(writeExport(t, map[string]string{"Patient": p}), m)
	if err != nil {
		t.Fatal(err)
	}
	_, r2, err := Load(writeExport(t, map[string]string{"Patient": p}), m)
	if err != nil {
		t.Fatal(err)
	}
	_, r3, err := Load(writeExport(t, map[string]string{"Patient": lines(patientJSON("a", "male", "1970-06-16"))}), m)
	if err != nil {
		t.Fatal(err)
	}
	if r1.SHA256 != r2.SHA256 || r1.SHA256 == r3.SHA256 {
		t.Errorf("hashes %s %s %s: want equal for equal exports, different otherwise", r1.SHA256, r2.SHA256, r3.SHA256)
	}
}

func TestConsent(t *testing.T) {
	var pats []string
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"} {
		pats = append(pats, patientJSON(id, "male", "1970-01-01"))
	}
	consents := lines(
		// p1: permit, then a later deny: excluded
		consentJSON("c1a", "p1", "research", "active", "permit", "2020-01-01"),
		consentJSON("c1b", "p1", "research", "active", "deny", "2021-01-01"),
		// p2: deny, then a later permit: included
		consentJSON("c2a", "p2", "research", "active", "deny", "2020-01-01"),
		consentJSON("c2b", "p2", "research", "active", "permit", "2021-01-01T00:00:00Z"),
		// p3: the later deny comes first in the file: excluded
		consentJSON("c3b", "p3", "research", "active", "deny", "2021-01-01"),
		consentJSON("c3a", "p3", "research", "active", "permit", "2020-01-01"),
		// p4: a privacy deny says nothing about research: included
		consentJSON("c4", "p4", "patient-privacy", "active", "deny", "2021-01-01"),
		// p5: an inactive research deny: included
		consentJSON("c5", "p5", "research", "inactive", "deny", "2021-01-01"),
		// p6: a permit with a nested deny: excluded
		`{"resourceType":"Consent","id":"c6","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"research"}]},"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/p6"},"dateTime":"2021-01-01","provision":{"type":"permit","provision":[{"type":"deny","class":[{"system":"http://hl7.org/fhir/resource-types","code":"Observation"}]}]}}`,
		// p7: a permit and a deny at the same time: excluded
		consentJSON("c7a", "p7", "research", "active", "permit", "2021-01-01"),
		consentJSON("c7b", "p7", "research", "active", "deny", "2021-01-01"),
		// p8: a deny without dateTime loses to a dated permit: included
		consentJSON("c8a", "p8", "research", "active", "permit", "2019-01-01"),
		consentJSON("c8b", "p8", "research", "active", "deny", ""),
		// p9: no consent at all
		// an unknown patient
		consentJSON("cx", "nobody", "research", "active", "deny", "2021-01-01"),
	)
	// Every patient has the label condition and a value, so only consent
	// removes rows; a denied patient's Observations must not be looked
	// at, so p1's is malformed (a unit the mapping rejects).
	var obsLines, condLines []string
	for i := 1; i <= 9; i++ {
		unit := "mm[Hg]"
		if i == 1 {
			unit = "furlong"
		}
		obsLines = append(obsLines, obs(fmt.Sprint("o", i), fmt.Sprint("p", i), SystemLOINC, "8480-6", "2020-01-01", qty("120", unit)))
		if i%2 == 0 {
			condLines = append(condLines, cond(fmt.Sprint("d", i), fmt.Sprint("p", i), SystemICD10, "E11", ""))
		}
	}
	m := &Mapping{
		ReferenceDate: "2022-01-01",
		Label:         Label{Name: "diabetes", Condition: []string{SystemICD10 + "|E11"}},
		Columns: []Column{
			{Name: "age", Type: TypeNumeric, Patient: PatientAge},
			{Name: "sbp", Type: TypeNumeric, Observation: []string{SystemLOINC + "|8480-6"}, Unit: "mm[Hg]"},
		},
		Split: Split{TestFraction: 0.5, Seed: 1},
	}
	man := writeExport(t, map[string]string{"Patient": lines(pats...), "Consent": consents,
		"Observation": lines(obsLines...), "Condition": lines(condLines...)})

	tab, rep, err := Load(man, m)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(tab.PatientIDs, ","), "p2,p4,p5,p8,p9"; got != want {
		t.Errorf("opt-out rows %s, want %s", got, want)
	}
	if rep.ExcludedByConsent != 4 || rep.Unlinked != 1 {
		t.Errorf("excluded %d, unlinked %d; want 4, 1", rep.ExcludedByConsent, rep.Unlinked)
	}
	if rep.Skipped["Consent: scope is not research"] != 1 || rep.Skipped["Consent: research, status inactive"] != 1 {
		t.Errorf("skipped %v", rep.Skipped)
	}

	m.Consent.Mode = ConsentOptIn
	tab, rep, err = Load(man, m)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(tab.PatientIDs, ","), "p2,p8"; got != want {
		t.Errorf("opt-in rows %s, want %s", got, want)
	}
	if rep.ExcludedByConsent != 7 {
		t.Errorf("opt-in excluded %d, want 7", rep.ExcludedByConsent)
	}
}

func TestConsentErrors(t *testing.T) {
	m := &Mapping{
		Label:   Label{Name: "y", Condition: []string{SystemICD10 + "|E11"}},
		Columns: []Column{{Name: "sbp", Type: TypeNumeric, Observation: []string{SystemLOINC + "|8480-6"}, Unit: "mm[Hg]"}},
		Split:   Split{TestFraction: 0.5},
	}
	for name, tc := range map[string]struct{ line, want string }{
		"no status": {`{"resourceType":"Consent","id":"c","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"research"}]},"patient":{"reference":"Patient/p"},"provision":{"type":"deny"}}`,
			"fhir: Consent.ndjson:1 (Consent/c): status is missing"},
		"bad provision type": {`{"resourceType":"Consent","id":"c","status":"active","scope":{},"provision":{"type":"maybe"}}`,
			"fhir: Consent.ndjson:1 (Consent/c): unknown ConsentProvisionType code `maybe`"},
		"bad date": {consentJSON("c", "p", "research", "active", "deny", "yesterday"),
			`fhir: Consent.ndjson:1 (Consent/c): dateTime: "yesterday" is not a FHIR date or dateTime`},
	} {
		t.Run(name, func(t *testing.T) {
			man := writeExport(t, map[string]string{"Patient": lines(patientJSON("p", "", "")), "Consent": lines(tc.line)})
			_, _, err := Load(man, m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
}

func TestResourceErrors(t *testing.T) {
	m := mustMapping(t, "testdata/mapping-good.yaml")
	okPatient := patientJSON("p", "male", "1970-01-01")
	for name, tc := range map[string]struct {
		typ, body, want string
		is              error
	}{
		"not a number": {"Observation", lines(`{"resourceType":"Observation","id":"abc","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Patient/p"},"valueQuantity":{"value":"abc","code":"mm[Hg]"}}`),
			`fhir: Observation.ndjson:1 (Observation/abc): valueQuantity.value: not a number (got "abc") (column sbp_latest, code http://loinc.org|8480-6)`, nil},
		"quoted number": {"Observation", lines(obs("q", "p", SystemLOINC, "8480-6", "", `"valueQuantity":{"value":"120","code":"mm[Hg]"}`)),
			`(Observation/q): valueQuantity.value: not a number (got "120")`, nil},
		"number out of range": {"Observation", lines(obs("q", "p", SystemLOINC, "8480-6", "", `"valueQuantity":{"value":1e999,"code":"mm[Hg]"}`)),
			`valueQuantity.value: not a number in range (got 1e999)`, nil},
		"component": {"Observation", "\n\n" + lines(`{"resourceType":"Observation","id":"bp","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/p"},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":true,"code":"mm[Hg]"}}]}`),
			`fhir: Observation.ndjson:3 (Observation/bp): component[1].valueQuantity.value: not a number (got true)`, nil},
		"unit": {"Observation", lines(obs("u", "p", SystemLOINC, "8480-6", "", qty("16", "cm[Hg]"))),
			`(Observation/u): unit: valueQuantity is in "cm[Hg]", column sbp_latest wants "mm[Hg]" (give convert: {"cm[Hg]": factor} in the mapping to accept it)`, ErrUnit},
		"no unit": {"Observation", lines(obs("u", "p", SystemLOINC, "8480-6", "", `"valueQuantity":{"value":120}`)),
			`valueQuantity has no unit, column sbp_latest wants "mm[Hg]"`, ErrUnit},
		"unit system": {"Observation", lines(obs("u", "p", SystemLOINC, "8480-6", "", `"valueQuantity":{"value":120,"system":"http://example.org/units","code":"mm[Hg]"}`)),
			`valueQuantity.system is "http://example.org/units", want UCUM`, nil},
		"not JSON": {"Observation", lines(`{"resourceType":"Observation",`),
			"fhir: Observation.ndjson:1: not valid JSON", nil},
		"wrong type": {"Observation", lines(okPatient),
			"fhir: Observation.ndjson:1 (Patient/p): resourceType is Patient, but the manifest lists this file as Observation", nil},
		"no resourceType": {"Observation", lines(`{"id":"x"}`),
			"fhir: Observation.ndjson:1 (id x): no resourceType", nil},
		"json type": {"Observation", lines(`{"resourceType":"Observation","id":"abc","status":"final","code":{"coding":[{"code":5}]}}`),
			"fhir: Observation.ndjson:1 (Observation/abc): code.coding.code: not a string, got a number", nil},
		"enum": {"Observation", lines(`{"resourceType":"Observation","status":"done","id":"abc","code":{}}`),
			"fhir: Observation.ndjson:1 (Observation/abc): unknown ObservationStatus code `done`", nil},
		"no status": {"Observation", lines(`{"resourceType":"Observation","id":"abc","code":{}}`),
			"(Observation/abc): status is missing", nil},
		"bad time": {"Observation", lines(obs("t", "p", SystemLOINC, "8480-6", "28/03/2016", qty("1", "mm[Hg]"))),
			`(Observation/t): effectiveDateTime: "28/03/2016" is not a FHIR date or dateTime`, nil},
		"level": {"Observation", lines(obs("e", "p", SystemLOINC, "8601-7", "", coded(SystemSNOMED, "1234"))),
			"(Observation/e): valueCodeableConcept: none of its codes (http://snomed.info/sct|1234) is a level of column ecg (levels normal, st-t, lvh)", nil},
		"boolean code": {"Observation", lines(obs("g", "p", SystemLOINC, "1558-6", "", coded(interp, "L"))),
			"is in the true_codes or false_codes of column glucose_high", nil},
		"value kind": {"Observation", lines(obs("s", "p", SystemLOINC, "8480-6", "", `"valueString":"120/80"`)),
			"(Observation/s): valueString: a numeric column cannot use it", nil},
		"integer with unit": {"Observation", lines(obs("i", "p", SystemLOINC, "8480-6", "", `"valueInteger":120`)),
			`valueInteger has no unit, column sbp_latest wants "mm[Hg]"`, nil},
		"duplicate patient": {"Patient", lines(okPatient, okPatient),
			"fhir: Patient.ndjson:2 (Patient/p): duplicate id", nil},
		"patient without id": {"Patient", lines(`{"resourceType":"Patient","gender":"male"}`),
			"fhir: Patient.ndjson:1 (Patient): no id", nil},
		"birth date": {"Patient", lines(patientJSON("q", "male", "25.12.1974")),
			`(Patient/q): birthDate: "25.12.1974" is not a FHIR date`, nil},
		"born later": {"Patient", lines(patientJSON("q", "male", "2021-01-01")),
			`(Patient/q): birthDate 2021-01-01 is after the reference date 2020-01-01`, nil},
		"gender": {"Patient", lines(patientJSON("q", "robot", "")),
			"(Patient/q): unknown AdministrativeGender code `robot`", nil},
	} {
		t.Run(name, func(t *testing.T) {
			files := map[string]string{"Patient": lines(okPatient)}
			files[tc.typ] = tc.body
			_, _, err := Load(writeExport(t, files), m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			var re *ResourceError
			if !errors.As(err, &re) {
				t.Errorf("%T is not a *ResourceError", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error is not %v", tc.is)
			}
		})
	}
}

func TestManifestErrors(t *testing.T) {
	m := mustMapping(t, "testdata/mapping-good.yaml")
	write := func(t *testing.T, man string, files map[string]string) string {
		dir := t.TempDir()
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, "manifest.json")
		if err := os.WriteFile(p, []byte(man), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pat := lines(patientJSON("p", "male", "1970-01-01"))
	for name, tc := range map[string]struct{ man, want string }{
		"no patients":   {`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Observation","url":"Observation.ndjson"}]}`, "no Patient output"},
		"no time":       {`{"output":[]}`, "no transactionTime"},
		"bad time":      {`{"transactionTime":"yesterday","output":[]}`, `transactionTime "yesterday" is not a FHIR instant`},
		"not JSON":      {`{"transactionTime":`, "not valid JSON"},
		"remote":        {`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Patient","url":"https://server.example/bulk/1/Patient.ndjson"}]}`, "is remote"},
		"missing file":  {`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Patient","url":"Gone.ndjson"}]}`, "Gone.ndjson: no such file"},
		"count":         {`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Patient","url":"Patient.ndjson","count":2}]}`, "Patient.ndjson: the manifest says 2 resources, the file has 1"},
		"entry without": {`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Patient"}]}`, "output[0]: type and url are required"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Load(write(t, tc.man, map[string]string{"Patient.ndjson": pat}), m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			if !errors.Is(err, ErrManifest) {
				t.Errorf("%v is not ErrManifest", err)
			}
		})
	}

	// file: URLs, several files of one type, error files and types Load
	// does not read.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p1.ndjson"), []byte(pat), 0o644); err != nil {
		t.Fatal(err)
	}
	man := fmt.Sprintf(`{"transactionTime":"2024-01-01T00:00:00Z","output":[{"type":"Patient","url":"p1.ndjson","count":1},{"type":"Patient","url":"file://%s"},{"type":"Encounter","url":"nowhere.ndjson"}],"error":[{"type":"OperationOutcome","url":"err.ndjson"}]}`,
		filepath.ToSlash(filepath.Join(dir, "p2.ndjson")))
	if err := os.WriteFile(filepath.Join(dir, "p2.ndjson"), []byte(lines(patientJSON("q", "female", "1980-01-01"))), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(p, []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	_, rep, err := Load(p, m)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Patients != 2 || rep.ExportErrors != 1 || len(rep.Files) != 2 {
		t.Errorf("report %+v", rep)
	}
}

func TestAgeAt(t *testing.T) {
	ref := time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		birth string
		age   int
		ok    bool
	}{
		{"1970-03-01", 50, true},
		{"1970-03-02", 49, true},
		{"1970-02-28", 50, true},
		{"1972-02-29", 48, true},
		{"1970-02", 50, true},   // every day of February 1970: 50
		{"1970-03", 0, false},   // 50 on March 1st, 49 on the 2nd
		{"1970", 0, false},      // 49 or 50
		{"2020-03-01", 0, true}, // born today
	} {
		age, ok, err := ageAt(tc.birth, ref)
		if err != nil || ok != tc.ok || (ok && age != tc.age) {
			t.Errorf("ageAt(%s) = %d, %v, %v; want %d, %v", tc.birth, age, ok, err, tc.age, tc.ok)
		}
	}
	for _, bad := range []string{"1970-13-01", "1970-02-30", "2020-03-02", "1970-01-01T00:00:00Z", ""} {
		if _, _, err := ageAt(bad, ref); err == nil {
			t.Errorf("ageAt(%q) did not fail", bad)
		}
	}
}

func TestPatientRef(t *testing.T) {
	for ref, want := range map[string]string{
		"Patient/123":                         "123",
		"https://fhir.example/r4/Patient/a-1": "a-1",
		"Patient/123/_history/4":              "123",
		"Group/1":                             "",
		"Patient/":                            "",
		"MyPatient/1":                         "",
		"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0": "",
	} {
		got, ok := patientRef(&fhir.Reference{Reference: ptr(ref)})
		if got != want || ok != (want != "") {
			t.Errorf("patientRef(%q) = %q, %v; want %q", ref, got, ok, want)
		}
	}
	if _, ok := patientRef(nil); ok {
		t.Error("nil reference")
	}
}

func TestLoadDatasetsTooFewRows(t *testing.T) {
	m := mustMapping(t, "testdata/mapping-good.yaml")
	man := writeExport(t, map[string]string{"Patient": lines(patientJSON("a", "male", "1970-01-01"), patientJSON("b", "female", "1970-01-01"))})
	_, _, _, err := LoadDatasets(man, m)
	if err == nil || !strings.Contains(err.Error(), "0 rows, want at least 2 (2 patients, 0 excluded by consent, 2 dropped for a missing value; patients without a value: sbp_latest 2, sbp_mean 2") {
		t.Errorf("got %v", err)
	}
	if _, _, err := Load(man, nil); !errors.Is(err, ErrMapping) {
		t.Errorf("nil mapping: %v", err)
	}
}

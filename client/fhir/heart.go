package fhir

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/datasets/heart"
)

//go:embed heart-mapping.yaml
var heartMappingYAML []byte

// HeartMapping is the shipped mapping of the UCI heart-disease features
// (heart-mapping.yaml, embedded): what Export writes and LoadHeart reads.
// Each call returns a fresh copy.
func HeartMapping() *Mapping {
	m, err := ParseMapping(heartMappingYAML, "heart-mapping.yaml")
	if err != nil {
		panic(err) // the embedded file is tested
	}
	return m
}

// LoadHeart loads a heart-disease hospital exported by Export (or any
// export coded as heart-mapping.yaml says) into the datasets
// train.LoadHeart gives for that hospital: the same 13 inputs, rows in the
// same order, the same label, split (0.66 of the rows, shuffled with seed)
// and standardisation, bit for bit. Patients excluded by consent are not
// among the rows.
func LoadHeart(manifestPath string, seed int64) (tr, te *train.Dataset, rep *Report, err error) {
	m := HeartMapping()
	m.Split.Seed = seed
	return LoadDatasets(manifestPath, m)
}

// ExportOptions tune Export.
type ExportOptions struct {
	// DenyEvery > 0 gives every DenyEvery-th patient (the DenyEvery-th,
	// the 2·DenyEvery-th, ... in file order) a research denial.
	DenyEvery int
	// DenyFraction in [0, 1] gives that fraction of the patients (rounded
	// to the nearest count), chosen by a permutation seeded with Seed, a
	// research denial. At most one of DenyEvery and DenyFraction is set.
	DenyFraction float64
	Seed         int64
	// TransactionTime is the manifest's; zero means HeartExportTime, so
	// that an export is reproducible byte for byte.
	TransactionTime time.Time
}

// HeartExportTime is the default transactionTime of Export.
var HeartExportTime = time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)

// denied returns which of n patients (by index) get a research denial.
func (o ExportOptions) denied(n int) (map[int]bool, error) {
	switch {
	case o.DenyEvery < 0:
		return nil, fmt.Errorf("fhir: export: DenyEvery = %d, want >= 0", o.DenyEvery)
	case !(o.DenyFraction >= 0 && o.DenyFraction <= 1):
		return nil, fmt.Errorf("fhir: export: DenyFraction = %v, want [0, 1]", o.DenyFraction)
	case o.DenyEvery > 0 && o.DenyFraction > 0:
		return nil, errors.New("fhir: export: set DenyEvery or DenyFraction, not both")
	}
	out := map[int]bool{}
	if o.DenyEvery > 0 {
		for i := o.DenyEvery - 1; i < n; i += o.DenyEvery {
			out[i] = true
		}
	}
	if o.DenyFraction > 0 {
		k := int(math.Round(o.DenyFraction * float64(n)))
		for _, i := range rand.New(rand.NewSource(o.Seed)).Perm(n)[:k] {
			out[i] = true
		}
	}
	return out, nil
}

// The codes Export writes (heart-mapping.yaml documents them).
const (
	interpretationSystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
	categorySystem       = "http://terminology.hl7.org/CodeSystem/observation-category"
	exerciseStressTest   = "165079009"
	coronaryDisease      = "53741008"
)

// heartObservations are the Observations of one UCI row: the CSV column,
// the mapping column and how the value is written.
var heartObservations = []struct {
	csv      int
	column   string
	category string
	system   string
	code     string
	display  string
	unit     string // valueQuantity's UCUM unit; "" for the coded and boolean values
	exercise bool   // measured in the exercise stress test
}{
	{3, "trestbps", "vital-signs", SystemLOINC, "8480-6", "Systolic blood pressure", "mm[Hg]", false},
	{4, "chol", "laboratory", SystemLOINC, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", false},
	{5, "fbs", "laboratory", SystemLOINC, "1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "", false},
	{7, "thalach", "exam", SystemLOINC, "89273-7", "Heart rate --W exercise", "/min", true},
	{8, "exang", "exam", SystemSNOMED, "194828000", "Angina", "", true},
	{9, "oldpeak", "exam", SystemSNOMED, "26141007", "ST segment depression", "mm", true},
	{2, "cp", "exam", SystemSNOMED, "29857009", "Chest pain", "", false},
	{6, "restecg", "procedure", SystemLOINC, "8601-7", "EKG impression", "", false},
}

// Export writes one heart-disease hospital's processed UCI file as a FHIR
// R4 Bulk Data export in dir: Patient.ndjson (ids <hospital>-0001, ... in
// file order; gender from sex; a birthDate that makes the age at the
// mapping's reference date the file's age), Observation.ndjson (one per
// present value, coded as heart-mapping.yaml says; a missing value "?" is
// simply absent), Condition.ndjson (coronary artery disease for num > 0),
// Consent.ndjson (a research permit for every patient, and a later research
// denial for those opts selects) and manifest.json, written last.
//
// fedledger fhir export --hospital H --out DIR [--deny-every N] is this
// function.
func Export(hospital, dir string, opts ExportOptions) error {
	raw, err := heart.File(hospital)
	if err != nil {
		return err
	}
	file := heart.Files[hospital]
	type row struct {
		line int
		f    []string
	}
	var rows []row
	for i, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 14 {
			return fmt.Errorf("fhir: export: %s:%d: %d columns, want 14", file, i+1, len(f))
		}
		for k := range f {
			f[k] = strings.TrimSpace(f[k])
		}
		rows = append(rows, row{i + 1, f})
	}
	denied, err := opts.denied(len(rows))
	if err != nil {
		return err
	}
	m := HeartMapping()
	ref, _ := time.Parse(time.DateOnly, m.ReferenceDate)
	tt := opts.TransactionTime
	if tt.IsZero() {
		tt = HeartExportTime
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fhir: export: %w", err)
	}
	w := &exportWriter{dir: dir}
	defer w.close()
	for _, typ := range []string{"Patient", "Observation", "Condition", "Consent"} {
		if err := w.open(typ); err != nil {
			return err
		}
	}
	day := ref.Format(time.DateOnly)
	for i, rw := range rows {
		f, line := rw.f, rw.line
		id := fmt.Sprintf("%s-%04d", hospital, i+1)
		subject := &fhir.Reference{Reference: ptr("Patient/" + id)}
		bad := func(col int, why string) error {
			return fmt.Errorf("fhir: export: %s:%d: column %d %q: %s", file, line, col+1, f[col], why)
		}
		num := func(col int) (float64, bool, error) {
			if f[col] == "?" {
				return 0, false, nil
			}
			v, err := strconv.ParseFloat(f[col], 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, false, bad(col, "not a number")
			}
			return v, true, nil
		}

		p := fhir.Patient{Id: ptr(id), Identifier: []fhir.Identifier{{System: ptr("urn:fedledger:heart:" + hospital), Value: ptr(strconv.Itoa(i + 1))}}}
		if age, ok, err := num(0); err != nil {
			return err
		} else if ok {
			if age != math.Trunc(age) || age < 0 || age > 150 {
				return bad(0, "not an age in whole years")
			}
			// Any birthday in the year before the reference date's
			// anniversary gives the same completed years; spread them.
			born := ref.AddDate(-int(age), 0, -(i*97)%365)
			p.BirthDate = ptr(born.Format(time.DateOnly))
		}
		if sex, ok, err := num(1); err != nil {
			return err
		} else if ok {
			g := fhir.AdministrativeGenderFemale
			switch sex {
			case 1:
				g = fhir.AdministrativeGenderMale
			case 0:
			default:
				return bad(1, "sex is not 0 or 1")
			}
			p.Gender = &g
		}
		if err := w.write("Patient", p); err != nil {
			return err
		}

		for _, ob := range heartObservations {
			v, ok, err := num(ob.csv)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			o := fhir.Observation{
				Id:                ptr(id + "-" + ob.column),
				Status:            fhir.ObservationStatusFinal,
				Category:          []fhir.CodeableConcept{concept(categorySystem, ob.category, "")},
				Code:              concept(ob.system, ob.code, ob.display),
				Subject:           subject,
				EffectiveDateTime: ptr(day),
			}
			if ob.exercise {
				o.Method = ptr(concept(SystemSNOMED, exerciseStressTest, "Exercise stress test"))
			}
			switch ob.column {
			case "fbs":
				code, display := "N", "Normal"
				switch v {
				case 1:
					code, display = "H", "High"
				case 0:
				default:
					return bad(ob.csv, "fbs is not 0 or 1")
				}
				o.ValueCodeableConcept = ptr(concept(interpretationSystem, code, display))
				o.Note = []fhir.Annotation{{Text: "fasting glucose above 120 mg/dL is H"}}
			case "exang":
				if v != 0 && v != 1 {
					return bad(ob.csv, "exang is not 0 or 1")
				}
				o.ValueBoolean = ptr(v == 1)
			case "cp", "restecg":
				levels := levelCodes(m, ob.column)
				k := int(v)
				if ob.column == "cp" {
					k-- // levels 1..4
				}
				if float64(int(v)) != v || k < 0 || k >= len(levels) {
					return bad(ob.csv, ob.column+" is out of range")
				}
				system, code, _ := strings.Cut(levels[k], "|")
				o.ValueCodeableConcept = ptr(concept(system, code, ""))
			default:
				n := json.Number(strconv.FormatFloat(v, 'f', -1, 64))
				o.ValueQuantity = &fhir.Quantity{Value: &n, Unit: ptr(ob.unit), System: ptr(SystemUCUM), Code: ptr(ob.unit)}
			}
			if err := w.write("Observation", o); err != nil {
				return err
			}
		}

		switch target, ok, err := num(13); {
		case err != nil:
			return err
		case !ok:
			return bad(13, "the label num is missing: a Condition's absence would read as no disease")
		case target > 0:
			c := fhir.Condition{
				Id:                 ptr(id + "-cad"),
				ClinicalStatus:     ptr(concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "")),
				VerificationStatus: ptr(concept(conditionVerSystem, "confirmed", "")),
				Category:           []fhir.CodeableConcept{concept("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "")},
				Code:               ptr(concept(SystemSNOMED, coronaryDisease, "Coronary arteriosclerosis")),
				Subject:            *subject,
				RecordedDate:       ptr(day),
				Note:               []fhir.Annotation{{Text: "angiographic disease, UCI num " + f[13]}},
			}
			if err := w.write("Condition", c); err != nil {
				return err
			}
		}

		if err := w.write("Consent", researchConsent(id+"-consent", subject, fhir.ConsentProvisionTypePermit, day)); err != nil {
			return err
		}
		if denied[i] {
			later := ref.AddDate(1, 0, 0).Format(time.DateOnly)
			if err := w.write("Consent", researchConsent(id+"-withdrawal", subject, fhir.ConsentProvisionTypeDeny, later)); err != nil {
				return err
			}
		}
	}
	if err := w.close(); err != nil {
		return err
	}

	man := Manifest{
		TransactionTime: tt.UTC().Format(time.RFC3339),
		Request:         "https://fedledger.invalid/heart/" + hospital + "/$export?_type=Patient,Observation,Condition,Consent",
		Output:          []ManifestEntry{},
		Error:           []ManifestEntry{},
	}
	for _, typ := range w.order {
		n := w.count[typ]
		man.Output = append(man.Output, ManifestEntry{Type: typ, URL: typ + ".ndjson", Count: &n})
	}
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fhir: export: %w", err)
	}
	return nil
}

func researchConsent(id string, patient *fhir.Reference, t fhir.ConsentProvisionType, day string) fhir.Consent {
	return fhir.Consent{
		Id:        ptr(id),
		Status:    fhir.ConsentStateActive,
		Scope:     concept(ConsentScopeSystem, "research", "Research"),
		Category:  []fhir.CodeableConcept{concept(SystemLOINC, ConsentCategoryLOINC, "Patient Consent")},
		Patient:   patient,
		DateTime:  ptr(day),
		Provision: &fhir.ConsentProvision{Type: &t},
	}
}

// levelCodes is the first code of each level of a categorical column.
func levelCodes(m *Mapping, column string) []string {
	for _, c := range m.Columns {
		if c.Name == column {
			var out []string
			for _, l := range c.Levels {
				out = append(out, l.Codes[0])
			}
			return out
		}
	}
	return nil
}

func concept(system, code, display string) fhir.CodeableConcept {
	c := fhir.Coding{System: ptr(system), Code: ptr(code)}
	if display != "" {
		c.Display = ptr(display)
	}
	return fhir.CodeableConcept{Coding: []fhir.Coding{c}}
}

func ptr[T any](v T) *T { return &v }

// exportWriter writes one NDJSON file per resource type.
type exportWriter struct {
	dir   string
	order []string
	files map[string]*os.File
	bufs  map[string]*bufio.Writer
	count map[string]int
	err   error
}

func (w *exportWriter) open(typ string) error {
	if w.files == nil {
		w.files, w.bufs, w.count = map[string]*os.File{}, map[string]*bufio.Writer{}, map[string]int{}
	}
	f, err := os.Create(filepath.Join(w.dir, typ+".ndjson"))
	if err != nil {
		return fmt.Errorf("fhir: export: %w", err)
	}
	w.order = append(w.order, typ)
	w.files[typ], w.bufs[typ] = f, bufio.NewWriterSize(f, 256<<10)
	return nil
}

// write appends one resource as a line; samply's MarshalJSON adds the
// resourceType.
func (w *exportWriter) write(typ string, resource any) error {
	b, err := json.Marshal(resource)
	if err != nil {
		return fmt.Errorf("fhir: export: %s: %w", typ, err)
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		return fmt.Errorf("fhir: export: %s: a newline in a resource", typ)
	}
	bw := w.bufs[typ]
	bw.Write(b)
	if err := bw.WriteByte('\n'); err != nil {
		return fmt.Errorf("fhir: export: %s.ndjson: %w", typ, err)
	}
	w.count[typ]++
	return nil
}

// close flushes and closes every file once; the first error wins.
func (w *exportWriter) close() error {
	for _, typ := range w.order {
		if f := w.files[typ]; f != nil {
			if err := w.bufs[typ].Flush(); err != nil && w.err == nil {
				w.err = fmt.Errorf("fhir: export: %s.ndjson: %w", typ, err)
			}
			if err := f.Close(); err != nil && w.err == nil {
				w.err = fmt.Errorf("fhir: export: %s.ndjson: %w", typ, err)
			}
			w.files[typ] = nil
		}
	}
	return w.err
}

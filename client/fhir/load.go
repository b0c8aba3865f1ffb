package fhir

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/fedledger/fedledger/client/train"
)

// Report says what Load read and what it did with it. A site's data
// manifest records it next to the datasets' train.Preprocessing.
type Report struct {
	Manifest string `json:"manifest"`
	// Mapping is the mapping's name.
	Mapping         string `json:"mapping"`
	TransactionTime string `json:"transaction_time"`
	// SHA256 commits to every byte Load used: the manifest and each file
	// it read (Files, in manifest order), as the SHA-256 of the lines
	// "fedledger-fhir-v1", then "manifest <sha256>", then per file
	// "<type> <url> <bytes> <sha256>".
	SHA256 string       `json:"sha256"`
	Files  []FileReport `json:"files"`
	// Resources counts the resources read, per type.
	Resources map[string]int `json:"resources"`
	// Patients is the number of Patient resources; each is one row unless
	// excluded by consent or dropped for a missing value.
	Patients int `json:"patients"`
	// ExcludedByConsent counts patients left out by the consent policy
	// (a research deny; in opt-in mode, no research permit).
	ExcludedByConsent int `json:"excluded_by_consent"`
	// DroppedMissing counts the remaining patients left out for lacking a
	// value of some column; MissingByColumn counts, per column, the
	// patients that lack it (one patient may lack several).
	DroppedMissing  int            `json:"dropped_missing"`
	MissingByColumn map[string]int `json:"missing_by_column,omitempty"`
	// Rows is the number of rows of the table, Positive of them positive.
	Rows     int `json:"rows"`
	Positive int `json:"positive"`
	// Unlinked counts Consents, Conditions and Observations of a mapped
	// code whose subject is a Patient the export does not have.
	Unlinked int `json:"unlinked"`
	// Skipped counts resources, and values of a column, not used, by
	// reason ("Observation: status entered-in-error", "Consent: scope is
	// not research", "Observation: no value", ...).
	Skipped map[string]int `json:"skipped,omitempty"`
	// ExportErrors is the number of error files the manifest lists: the
	// server could not export some resources.
	ExportErrors int `json:"export_errors"`
}

// FileReport is one file Load read.
type FileReport struct {
	Type      string `json:"type"`
	URL       string `json:"url"`
	Bytes     int64  `json:"bytes"`
	Resources int    `json:"resources"`
	SHA256    string `json:"sha256"`
}

// Table is what Load produces: a train.Table (its Record filled in from the
// mapping and the report) and the patient of every row.
type Table struct {
	train.Table
	// PatientIDs are the rows' patients, in Patient file order. They stay
	// here: the datasets do not carry them.
	PatientIDs []string
}

// Datasets encodes, splits and standardises the table (train.FromTable).
func (t *Table) Datasets() (tr, te *train.Dataset, err error) {
	return train.FromTable(&t.Table)
}

// Resource types Load reads, in the order it reads them: patients first
// (they are the rows), then consents (so no clinical data of an excluded
// patient is looked at), then the clinical resources.
var loadOrder = []string{"Patient", "Consent", "Condition", "Observation"}

// Load reads the Bulk Data export whose manifest is at manifestPath and
// maps it with m into one row per patient, in the order the patients
// appear in the Patient file(s). It streams every file once; its memory
// grows with the number of patients (a few words per patient and column),
// not with the number of resources.
//
// Errors name the file, the line and the resource (*ResourceError), the
// manifest (ErrManifest) or the mapping (*MappingError).
func Load(manifestPath string, m *Mapping) (*Table, *Report, error) {
	if m == nil {
		return nil, nil, &MappingError{Problems: []string{"no mapping (HeartMapping is the shipped one)"}}
	}
	c, err := compile(m)
	if err != nil {
		return nil, nil, err
	}
	man, raw, err := ReadManifest(manifestPath)
	if err != nil {
		return nil, nil, err
	}
	rep := &Report{Manifest: manifestPath, Mapping: m.Name, TransactionTime: man.TransactionTime, Resources: map[string]int{},
		MissingByColumn: map[string]int{}, Skipped: map[string]int{}, ExportErrors: len(man.Error)}
	l := &loader{c: c, rep: rep, ids: map[string]int{}, ncol: len(c.cols)}

	files := map[string][]int{} // type -> indexes in man.Output
	for i, e := range man.Output {
		files[e.Type] = append(files[e.Type], i)
	}
	if len(files["Patient"]) == 0 {
		return nil, nil, fmt.Errorf("%w %s: no Patient output: the rows are the patients", ErrManifest, manifestPath)
	}
	reports := make([]*FileReport, len(man.Output))
	for _, typ := range loadOrder {
		if typ == "Observation" && !c.needObs {
			continue // no column comes from Observations: not read, not hashed
		}
		for _, i := range files[typ] {
			e := man.Output[i]
			fr, err := l.readFile(manifestPath, e)
			if err != nil {
				return nil, nil, err
			}
			reports[i] = fr
		}
	}

	h := sha256.New()
	fmt.Fprintf(h, "fedledger-fhir-v1\nmanifest %x\n", sha256.Sum256(raw))
	for _, fr := range reports {
		if fr != nil {
			fmt.Fprintf(h, "%s %s %d %s\n", fr.Type, fr.URL, fr.Bytes, fr.SHA256)
			rep.Files = append(rep.Files, *fr)
		}
	}
	rep.SHA256 = fmt.Sprintf("%x", h.Sum(nil))
	return l.table(manifestPath), rep, nil
}

// LoadDatasets loads an export (Load) and turns it into the train and test
// datasets the mapping's split describes.
func LoadDatasets(manifestPath string, m *Mapping) (tr, te *train.Dataset, rep *Report, err error) {
	t, rep, err := Load(manifestPath, m)
	if err != nil {
		return nil, nil, nil, err
	}
	tr, te, err = t.Datasets()
	if err != nil {
		var missing []string
		for _, c := range m.Columns {
			if n := rep.MissingByColumn[c.Name]; n > 0 {
				missing = append(missing, fmt.Sprintf("%s %d", c.Name, n))
			}
		}
		why := ""
		if len(missing) > 0 {
			why = "; patients without a value: " + strings.Join(missing, ", ")
		}
		return nil, nil, nil, fmt.Errorf("fhir: %s: %w (%d patients, %d excluded by consent, %d dropped for a missing value%s)",
			manifestPath, err, rep.Patients, rep.ExcludedByConsent, rep.DroppedMissing, why)
	}
	return tr, te, rep, nil
}

// LoadMappingOrHeart reads the mapping file at path, or returns
// HeartMapping when path is "": a client's data.fhir.mapping is optional.
func LoadMappingOrHeart(path string) (*Mapping, error) {
	if path == "" {
		return HeartMapping(), nil
	}
	return LoadMapping(path)
}

// acc accumulates one column's values for one patient.
type acc struct {
	v float64 // latest: the value; mean: the sum; max, min: the extreme; any, presence: 0 or 1
	t int64   // latest: the value's time
	n int32   // values seen
}

type loader struct {
	c    *compiled
	rep  *Report
	ids  map[string]int // patient id -> index
	pids []string
	accs []acc // patient i's columns are accs[i*ncol : (i+1)*ncol]
	lab  []bool
	cons []consentState
	ncol int
}

func (l *loader) skip(reason string) { l.rep.Skipped[reason]++ }

func (l *loader) patientAccs(i int) []acc { return l.accs[i*l.ncol : (i+1)*l.ncol] }

// countingHash hashes and counts what passes through it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (l *loader) readFile(manifestPath string, e ManifestEntry) (*FileReport, error) {
	path, err := resolve(manifestPath, e)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %s output: %w", ErrManifest, manifestPath, e.Type, err)
	}
	defer f.Close()
	ch := &countingHash{h: sha256.New()}
	n, err := l.read(io.TeeReader(f, ch), e.URL, e.Type)
	if err != nil {
		return nil, err
	}
	if e.Count != nil && *e.Count != n {
		return nil, fmt.Errorf("%w %s: %s: the manifest says %d resources, the file has %d (truncated or replaced?)", ErrManifest, manifestPath, e.URL, *e.Count, n)
	}
	return &FileReport{Type: e.Type, URL: e.URL, Bytes: ch.n, Resources: n, SHA256: fmt.Sprintf("%x", ch.h.Sum(nil))}, nil
}

// read processes one NDJSON stream of resources of type typ and returns
// how many it read. name is the file's name in errors.
func (l *loader) read(rd io.Reader, name, typ string) (int, error) {
	r := NewReader(rd, name)
	var handle func(*Reader, []byte) error
	switch typ {
	case "Patient":
		handle = l.patient
	case "Consent":
		handle = l.consent
	case "Condition":
		handle = l.condition
	case "Observation":
		handle = l.observation
	default:
		return 0, nil
	}
	n := 0
	for {
		line, err := r.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := handle(r, line); err != nil {
			return n, err
		}
		n++
		l.rep.Resources[typ]++
	}
}

func resErr(r *Reader, typ, id string, err error) error {
	return &ResourceError{File: r.Name(), Line: r.Line(), Type: typ, ID: id, Err: err}
}

func (l *loader) patient(r *Reader, line []byte) error {
	var p patientLine
	if err := decodeLine(r, line, "Patient", &p); err != nil {
		return err
	}
	id := deref(p.Id)
	if id == "" {
		return resErr(r, "Patient", "", errors.New("no id (resources refer to patients as Patient/<id>)"))
	}
	if _, dup := l.ids[id]; dup {
		return resErr(r, "Patient", id, errors.New("duplicate id: an earlier Patient has it"))
	}
	i := len(l.pids)
	l.ids[id] = i
	l.pids = append(l.pids, id)
	l.accs = append(l.accs, make([]acc, l.ncol)...)
	l.lab = append(l.lab, false)
	l.cons = append(l.cons, consentState{})
	l.rep.Patients++
	accs := l.patientAccs(i)
	for j := range l.c.cols {
		col := &l.c.cols[j]
		switch col.Patient {
		case PatientAge:
			if p.BirthDate == nil {
				continue
			}
			age, ok, err := ageAt(*p.BirthDate, l.c.ref)
			if err != nil {
				return resErr(r, "Patient", id, err)
			}
			if !ok {
				l.skip("Patient: birthDate too coarse for an age at the reference date")
				continue
			}
			accs[j] = acc{v: float64(age), n: 1}
		case PatientGender:
			if p.Gender == nil {
				continue
			}
			g := p.Gender.Code()
			if col.Type == TypeBoolean {
				if v, ok := col.truth[g]; ok {
					accs[j] = acc{v: v, n: 1}
				}
			} else if k, ok := col.levels[g]; ok {
				accs[j] = acc{v: float64(k), n: 1}
			}
		}
	}
	return nil
}

func (l *loader) consent(r *Reader, line []byte) error {
	var c consentLine
	if err := decodeLine(r, line, "Consent", &c); err != nil {
		return err
	}
	pid, d, at, skip, err := researchDecision(&c)
	if err != nil {
		return resErr(r, "Consent", deref(c.Id), err)
	}
	if skip != "" {
		l.skip(skip)
		return nil
	}
	i, ok := l.ids[pid]
	if !ok {
		l.rep.Unlinked++
		return nil
	}
	l.cons[i].update(d, at)
	return nil
}

// subject resolves a clinical resource's subject to a patient index; ok is
// false (and the reason counted) when the resource is not used.
func (l *loader) subject(typ string, ref *fhir.Reference) (int, bool) {
	pid, ok := patientRef(ref)
	if !ok {
		l.skip(typ + ": subject is not a Patient reference")
		return 0, false
	}
	i, ok := l.ids[pid]
	if !ok {
		l.rep.Unlinked++
		return 0, false
	}
	if l.cons[i].excluded(l.c.optIn) {
		return 0, false // not looked at: no consent for research
	}
	return i, true
}

const conditionVerSystem = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

func (l *loader) condition(r *Reader, line []byte) error {
	var c conditionLine
	if err := decodeLine(r, line, "Condition", &c); err != nil {
		return err
	}
	for _, s := range []string{"refuted", "entered-in-error"} {
		if hasCoding(c.VerificationStatus, conditionVerSystem, s) {
			l.skip("Condition: verificationStatus " + s)
			return nil
		}
	}
	i, ok := l.subject("Condition", &c.Subject)
	if !ok {
		return nil
	}
	accs := l.patientAccs(i)
	for _, t := range tokens(c.Code) {
		if l.c.label[t] {
			l.lab[i] = true
		}
		for _, j := range l.c.cond[t] {
			accs[j].v, accs[j].n = 1, accs[j].n+1
		}
	}
	return nil
}

// obsValue is the value[x] of an Observation or of one of its components.
type obsValue struct {
	q     *quantity
	cc    *fhir.CodeableConcept
	b     *bool
	i     *int
	other string // the name of any other value[x] present
}

func (v obsValue) kind() string {
	switch {
	case v.q != nil:
		return "valueQuantity"
	case v.cc != nil:
		return "valueCodeableConcept"
	case v.b != nil:
		return "valueBoolean"
	case v.i != nil:
		return "valueInteger"
	}
	return v.other
}

func otherValue(s, t, dt *string, rng *fhir.Range, ratio *fhir.Ratio, sd *fhir.SampledData, per *fhir.Period) string {
	switch {
	case s != nil:
		return "valueString"
	case t != nil:
		return "valueTime"
	case dt != nil:
		return "valueDateTime"
	case rng != nil:
		return "valueRange"
	case ratio != nil:
		return "valueRatio"
	case sd != nil:
		return "valueSampledData"
	case per != nil:
		return "valuePeriod"
	}
	return ""
}

func (l *loader) observation(r *Reader, line []byte) error {
	var o observationLine
	if err := decodeLine(r, line, "Observation", &o); err != nil {
		return err
	}
	id := deref(o.Id)
	if o.Status == nil {
		return resErr(r, "Observation", id, errors.New("status is missing (required in R4)"))
	}
	if s := *o.Status; s == fhir.ObservationStatusCancelled || s == fhir.ObservationStatusEnteredInError {
		l.skip("Observation: status " + s.Code())
		return nil
	}
	if !l.c.mapsAny(&o) {
		return nil
	}
	i, ok := l.subject("Observation", o.Subject)
	if !ok {
		return nil
	}
	t, err := observationTime(&o)
	if err != nil {
		return resErr(r, "Observation", id, err)
	}
	top := obsValue{q: o.ValueQuantity, cc: o.ValueCodeableConcept, b: o.ValueBoolean, i: o.ValueInteger,
		other: otherValue(o.ValueString, o.ValueTime, o.ValueDateTime, o.ValueRange, o.ValueRatio, o.ValueSampledData, o.ValuePeriod)}
	if err := l.observe(i, &o.Code, top, t, -1); err != nil {
		return resErr(r, "Observation", id, err)
	}
	for k := range o.Component {
		cp := &o.Component[k]
		v := obsValue{q: cp.ValueQuantity, cc: cp.ValueCodeableConcept, b: cp.ValueBoolean, i: cp.ValueInteger,
			other: otherValue(cp.ValueString, cp.ValueTime, cp.ValueDateTime, cp.ValueRange, cp.ValueRatio, cp.ValueSampledData, cp.ValuePeriod)}
		if err := l.observe(i, &cp.Code, v, t, k); err != nil {
			return resErr(r, "Observation", id, err)
		}
	}
	return nil
}

// mapsAny reports whether the Observation's code or a component's code
// feeds some column: most Observations of a real export do not, and are
// passed over without looking at their subject or values.
func (c *compiled) mapsAny(o *observationLine) bool {
	match := func(cc *fhir.CodeableConcept) bool {
		for _, cd := range cc.Coding {
			if cd.Code != nil && len(c.obs[deref(cd.System)+"|"+*cd.Code]) > 0 {
				return true
			}
		}
		return false
	}
	if match(&o.Code) {
		return true
	}
	for k := range o.Component {
		if match(&o.Component[k].Code) {
			return true
		}
	}
	return false
}

// observe adds the value of an Observation (component -1) or of one of its
// components to every column its code feeds.
func (l *loader) observe(i int, code *fhir.CodeableConcept, v obsValue, t int64, component int) error {
	accs := l.patientAccs(i)
	var done []int // columns fed already: two codings of one code feed a column once
	for _, tok := range tokens(code) {
		for _, j := range l.c.obs[tok] {
			if slices.Contains(done, j) {
				continue
			}
			done = append(done, j)
			col := &l.c.cols[j]
			x, skip, err := col.value(v)
			if err != nil {
				prefix := ""
				if component >= 0 {
					prefix = fmt.Sprintf("component[%d].", component)
				}
				return fmt.Errorf("%s%w (column %s, code %s)", prefix, err, col.Name, tok)
			}
			if skip != "" {
				l.skip("Observation: " + skip)
				continue
			}
			accs[j].add(x, t, col)
		}
	}
	return nil
}

// value is what an Observation value means for the column. skip, when not
// "", says why there is none (the Observation has no value, or a censored
// one).
func (c *ccol) value(v obsValue) (x float64, skip string, err error) {
	switch c.Type {
	case TypePresence:
		return 1, "", nil
	case TypeNumeric:
		switch {
		case v.q != nil:
			return c.quantity(v.q)
		case v.i != nil:
			if c.Unit != "1" {
				return 0, "", fmt.Errorf("valueInteger has no unit, column %s wants %q: send a valueQuantity", c.Name, c.Unit)
			}
			return float64(*v.i), "", nil
		}
	case TypeBoolean:
		switch {
		case v.b != nil:
			return b2f(*v.b), "", nil
		case v.cc != nil:
			ts := tokens(v.cc)
			for _, t := range ts {
				if x, ok := c.truth[t]; ok {
					return x, "", nil
				}
			}
			return 0, "", fmt.Errorf("valueCodeableConcept: none of its codes (%s) is in the true_codes or false_codes of column %s", strings.Join(ts, ", "), c.Name)
		}
	case TypeCategorical:
		if v.cc != nil {
			ts := tokens(v.cc)
			for _, t := range ts {
				if k, ok := c.levels[t]; ok {
					return float64(k), "", nil
				}
			}
			return 0, "", fmt.Errorf("valueCodeableConcept: none of its codes (%s) is a level of column %s (levels %s)", strings.Join(ts, ", "), c.Name, strings.Join(c.levelNames(), ", "))
		}
	}
	if k := v.kind(); k != "" {
		return 0, "", fmt.Errorf("%s: a %s column cannot use it", k, c.Type)
	}
	return 0, "no value", nil
}

// ErrUnit marks a value in a unit the mapping does not accept.
var ErrUnit = errors.New("unit")

func (c *ccol) quantity(q *quantity) (float64, string, error) {
	if len(q.Value) == 0 || string(q.Value) == "null" {
		return 0, "valueQuantity without a value", nil
	}
	v, err := decimal(q.Value)
	if err != nil {
		return 0, "", fmt.Errorf("valueQuantity.value: %v", err)
	}
	if q.Comparator != nil {
		return 0, "censored valueQuantity (comparator " + q.Comparator.Code() + ")", nil
	}
	if s := deref(q.System); s != "" && s != SystemUCUM {
		return 0, "", fmt.Errorf("valueQuantity.system is %q, want UCUM (%s)", s, SystemUCUM)
	}
	unit := deref(q.Code)
	if unit == "" {
		unit = deref(q.Unit)
	}
	switch f, ok := c.convert[unit]; {
	case unit == c.Unit:
		return v, "", nil
	case ok:
		return v * f, "", nil
	case unit == "":
		return 0, "", fmt.Errorf("%w: valueQuantity has no unit, column %s wants %q", ErrUnit, c.Name, c.Unit)
	}
	return 0, "", fmt.Errorf("%w: valueQuantity is in %q, column %s wants %q (give convert: {%q: factor} in the mapping to accept it)", ErrUnit, unit, c.Name, c.Unit, unit)
}

func (a *acc) add(v float64, t int64, c *ccol) {
	switch {
	case c.Type == TypePresence:
		a.v = 1
	case c.combine == CombineLatest:
		if a.n == 0 || t >= a.t {
			a.v, a.t = v, t
		}
	case c.combine == CombineMean:
		a.v += v
	case c.combine == CombineMax:
		if a.n == 0 || v > a.v {
			a.v = v
		}
	case c.combine == CombineMin:
		if a.n == 0 || v < a.v {
			a.v = v
		}
	case c.combine == CombineAny:
		a.v = max(a.v, v)
	}
	a.n++
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// table builds the rows of the patients that are in: not excluded by
// consent, and with a value for every column.
func (l *loader) table(name string) *Table {
	c, rep := l.c, l.rep
	t := &Table{Table: train.Table{Name: name, TrainFraction: c.trainFrac, Seed: c.m.Split.Seed, Standardize: c.m.Split.Standardize}}
	for _, col := range c.cols {
		tc := train.Column{Name: col.Name, Kind: train.KindNumeric}
		if col.Type == TypeCategorical {
			tc.Kind, tc.Categories = train.KindCategorical, col.levelNames()
		}
		t.Columns = append(t.Columns, tc)
	}
	for i, id := range l.pids {
		if l.cons[i].excluded(c.optIn) {
			rep.ExcludedByConsent++
			continue
		}
		accs := l.patientAccs(i)
		row := make([]float64, len(c.cols))
		complete := true
		for j := range c.cols {
			col, a := &c.cols[j], accs[j]
			switch {
			case col.Type == TypePresence:
				row[j] = a.v
			case a.n == 0:
				complete = false
				rep.MissingByColumn[col.Name]++
			case col.combine == CombineMean:
				row[j] = a.v / float64(a.n)
			default:
				row[j] = a.v
			}
		}
		if !complete {
			rep.DroppedMissing++
			continue
		}
		t.X = append(t.X, row)
		t.Y = append(t.Y, b2f(l.lab[i]))
		t.PatientIDs = append(t.PatientIDs, id)
		rep.Rows++
		rep.Positive += int(b2f(l.lab[i]))
	}
	positive := slices.Clone(c.m.Label.Condition)
	slices.Sort(positive)
	t.Record = train.Preprocessing{
		LabelColumn: c.m.Label.Name, PositiveLabels: slices.Compact(positive), Missing: "drop", MissingTokens: []string{},
		TestFraction: c.m.Split.TestFraction,
		Rows:         train.RowCounts{Read: rep.Patients - rep.ExcludedByConsent, Dropped: rep.DroppedMissing},
	}
	return t
}

package fhir

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Column types.
const (
	// TypeNumeric is a number: a Patient's age, or an Observation's
	// valueQuantity in the column's unit (valueInteger when the unit is
	// "1").
	TypeNumeric = "numeric"
	// TypeBoolean is 0 or 1: an Observation's valueBoolean, or its
	// valueCodeableConcept matched against true_codes and false_codes; or a
	// Patient's gender matched against them.
	TypeBoolean = "boolean"
	// TypeCategorical is one of the column's levels, one-hot encoded with
	// the first level as the reference: an Observation's
	// valueCodeableConcept, or a Patient's gender, matched against each
	// level's codes.
	TypeCategorical = "categorical"
	// TypePresence is 1 when the patient has a matching Observation or
	// Condition, 0 otherwise; it is never missing.
	TypePresence = "presence"
)

// How repeated values of one column for one patient combine.
const (
	CombineLatest = "latest" // the value with the latest effective time; at equal (or no) times the later in the file (default)
	CombineMean   = "mean"   // numeric only
	CombineMax    = "max"    // numeric only
	CombineMin    = "min"    // numeric only
	CombineAny    = "any"    // boolean only: 1 if any value is 1
)

// Patient fields a column can come from.
const (
	PatientAge    = "age"    // completed years at the mapping's reference date, from birthDate
	PatientGender = "gender" // administrative gender: male, female, other, unknown
)

// Consent modes.
const (
	// ConsentOptOut includes every patient except those whose latest
	// active research Consent denies (the default).
	ConsentOptOut = "opt-out"
	// ConsentOptIn includes only patients whose latest active research
	// Consent permits.
	ConsentOptIn = "opt-in"
)

// Code systems the mapping file names most often.
const (
	SystemLOINC  = "http://loinc.org"
	SystemSNOMED = "http://snomed.info/sct"
	SystemICD10  = "http://hl7.org/fhir/sid/icd-10"
	SystemUCUM   = "http://unitsofmeasure.org"
)

// Mapping says how a FHIR export becomes a table: which codes feed which
// feature columns and how, which Conditions make the label positive, which
// consent policy applies and how the rows are split. Write it in YAML (or
// JSON, which is YAML) and read it with LoadMapping, or build it in Go;
// HeartMapping is the shipped example.
//
// Codes are written as FHIR token search parameters, system|code:
// "http://loinc.org|8480-6".
type Mapping struct {
	Name string `yaml:"name,omitempty"`
	// ReferenceDate (YYYY-MM-DD) is the date ages are computed at.
	ReferenceDate string        `yaml:"reference_date,omitempty"`
	Consent       ConsentPolicy `yaml:"consent,omitempty"`
	Label         Label         `yaml:"label"`
	// Columns are the feature columns in input order; categorical columns
	// come last (their one-hot inputs follow the numeric ones).
	Columns []Column `yaml:"columns"`
	// Missing is what happens to a patient without a value for some
	// column: "drop" (the default, and the only policy) leaves the row
	// out, counted in Report.DroppedMissing.
	Missing string `yaml:"missing,omitempty"`
	Split   Split  `yaml:"split"`
}

// ConsentPolicy selects how research Consents admit patients.
type ConsentPolicy struct {
	Mode string `yaml:"mode,omitempty"` // ConsentOptOut (default) or ConsentOptIn
}

// Label is the outcome: positive when the patient has a Condition with one
// of these codes (not refuted or entered in error), negative otherwise.
type Label struct {
	Name      string   `yaml:"name"`
	Condition []string `yaml:"condition"`
}

// Column is one feature column. It comes from exactly one of Patient,
// Observation (codes matched against Observation.code and each
// component's code) or Condition (presence only).
type Column struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description,omitempty"`
	Type        string `yaml:"type"`

	Patient     string   `yaml:"patient,omitempty"`
	Observation []string `yaml:"observation,omitempty"`
	Condition   []string `yaml:"condition,omitempty"`

	// Unit is the UCUM code a numeric Observation column is in ("1" for
	// a dimensionless number). A value in another unit is an error unless
	// Convert has a factor for it: value in Unit = value * factor.
	Unit    string             `yaml:"unit,omitempty"`
	Convert map[string]float64 `yaml:"convert,omitempty"`
	Combine string             `yaml:"combine,omitempty"`

	// TrueCodes and FalseCodes are the codes (gender codes for a Patient
	// column) a boolean column reads as 1 and 0.
	TrueCodes  []string `yaml:"true_codes,omitempty"`
	FalseCodes []string `yaml:"false_codes,omitempty"`
	// Levels are a categorical column's levels; the first is the
	// reference level.
	Levels []Level `yaml:"levels,omitempty"`
}

// Level is one level of a categorical column and the codes that mean it.
type Level struct {
	Name  string   `yaml:"level"`
	Codes []string `yaml:"codes"`
}

// Split is the train/test split and standardisation, as in
// train.CSVConfig. The training fraction is 1 - TestFraction computed in
// decimal, so test_fraction: 0.34 trains on exactly LoadHeart's 0.66.
type Split struct {
	TestFraction float64 `yaml:"test_fraction"`
	Seed         int64   `yaml:"seed"`
	Standardize  bool    `yaml:"standardize"`
}

// ErrMapping marks an invalid mapping; the error is a *MappingError.
var ErrMapping = errors.New("fhir: mapping")

// MappingError lists every problem found in a mapping.
type MappingError struct {
	Source   string // the file, "" for a mapping built in Go
	Problems []string
}

func (e *MappingError) Error() string {
	src := ""
	if e.Source != "" {
		src = " " + e.Source
	}
	if len(e.Problems) == 1 {
		return fmt.Sprintf("fhir: mapping%s: %s", src, e.Problems[0])
	}
	return fmt.Sprintf("fhir: mapping%s: %d problems:\n\t%s", src, len(e.Problems), strings.Join(e.Problems, "\n\t"))
}

func (e *MappingError) Is(target error) bool { return target == ErrMapping }

// LoadMapping reads and validates a mapping file.
func LoadMapping(path string) (*Mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMapping, err)
	}
	return ParseMapping(b, path)
}

// ParseMapping parses and validates a mapping; source names it in errors.
// Unknown keys are errors, so a misspelt key is not silently ignored.
func ParseMapping(b []byte, source string) (*Mapping, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var m Mapping
	if err := dec.Decode(&m); err != nil {
		return nil, &MappingError{Source: source, Problems: []string{strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if _, err := compile(&m); err != nil {
		var me *MappingError
		if errors.As(err, &me) {
			me.Source = source
		}
		return nil, err
	}
	return &m, nil
}

// Validate checks the mapping and returns a *MappingError listing every
// problem.
func (m *Mapping) Validate() error {
	_, err := compile(m)
	return err
}

// compiled is a validated mapping in the form the loader uses.
type compiled struct {
	m         *Mapping
	ref       time.Time
	cols      []ccol
	obs       map[string][]int // token -> columns fed by Observations
	cond      map[string][]int // token -> presence columns fed by Conditions
	label     map[string]bool
	optIn     bool
	needObs   bool
	needCond  bool
	trainFrac float64
}

// ccol is a validated column.
type ccol struct {
	Column
	index   int
	combine string
	convert map[string]float64
	truth   map[string]float64 // code -> 1 or 0 (boolean)
	levels  map[string]int     // code -> level index (categorical)
}

// levelNames are a categorical column's levels in order.
func (c *ccol) levelNames() []string {
	out := make([]string, len(c.Levels))
	for i, l := range c.Levels {
		out[i] = l.Name
	}
	return out
}

var genders = []string{"male", "female", "other", "unknown"}

// systemTypos are spellings of the common code systems that are not the
// canonical URI FHIR data uses.
var systemTypos = map[string]string{
	"loinc": SystemLOINC, "LOINC": SystemLOINC, "https://loinc.org": SystemLOINC, "http://loinc.org/": SystemLOINC,
	"snomed": SystemSNOMED, "SNOMED": SystemSNOMED, "http://snomed.info/sct/": SystemSNOMED, "https://snomed.info/sct": SystemSNOMED,
	"icd-10": SystemICD10, "ICD-10": SystemICD10, "ICD10": SystemICD10, "http://hl7.org/fhir/sid/icd-10/": SystemICD10,
	"ucum": SystemUCUM, "http://unitsofmeasure.org/": SystemUCUM,
}

func checkToken(t string) error {
	system, code, ok := strings.Cut(t, "|")
	switch {
	case !ok || system == "" || code == "":
		return fmt.Errorf("%q is not system|code (e.g. %s|8480-6)", t, SystemLOINC)
	case systemTypos[system] != "":
		return fmt.Errorf("%q: system %q should be %q", t, system, systemTypos[system])
	case !strings.Contains(system, ":"):
		return fmt.Errorf("%q: system %q is not an absolute URI", t, system)
	}
	return nil
}

func compile(m *Mapping) (*compiled, error) {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	c := &compiled{m: m, obs: map[string][]int{}, cond: map[string][]int{}, label: map[string]bool{}}

	if m.ReferenceDate != "" {
		t, err := time.Parse(time.DateOnly, m.ReferenceDate)
		if err != nil {
			bad("reference_date: %q is not YYYY-MM-DD", m.ReferenceDate)
		}
		c.ref = t
	}
	switch m.Consent.Mode {
	case "", ConsentOptOut:
	case ConsentOptIn:
		c.optIn = true
	default:
		bad("consent.mode: %q, want %s or %s", m.Consent.Mode, ConsentOptOut, ConsentOptIn)
	}
	if m.Missing != "" && m.Missing != "drop" {
		bad("missing: %q, want drop (the only policy: a patient without a value for some column is left out)", m.Missing)
	}
	if !(m.Split.TestFraction > 0 && m.Split.TestFraction < 1) {
		bad("split.test_fraction: %v, want a fraction in (0, 1)", m.Split.TestFraction)
	}
	c.trainFrac = decimalComplement(m.Split.TestFraction)

	if m.Label.Name == "" {
		bad("label.name is empty")
	}
	if len(m.Label.Condition) == 0 {
		bad("label.condition: no codes (the label is positive when the patient has a Condition with one of them)")
	}
	for _, t := range m.Label.Condition {
		if err := checkToken(t); err != nil {
			bad("label.condition: %v", err)
		}
		c.label[t] = true
	}
	c.needCond = len(m.Label.Condition) > 0

	if len(m.Columns) == 0 {
		bad("columns: none")
	}
	names := map[string]int{m.Label.Name: -1}
	seenCategorical := ""
	for i := range m.Columns {
		col := &m.Columns[i]
		where := fmt.Sprintf("columns[%d]", i)
		if col.Name != "" {
			where += " " + col.Name
		}
		p := func(format string, args ...any) { bad(where+": "+format, args...) }
		if col.Name == "" {
			p("name is empty")
		} else if j, dup := names[col.Name]; dup {
			if j < 0 {
				p("name %q is the label's", col.Name)
			} else {
				p("name %q is also columns[%d]'s", col.Name, j)
			}
		} else {
			names[col.Name] = i
		}
		cc := ccol{Column: *col, index: i, combine: col.Combine}
		if cc.combine == "" {
			cc.combine = CombineLatest
		}

		sources := 0
		for _, s := range []bool{col.Patient != "", len(col.Observation) > 0, len(col.Condition) > 0} {
			if s {
				sources++
			}
		}
		if sources != 1 {
			p("set exactly one of patient, observation, condition (got %d)", sources)
		}
		for _, t := range slices.Concat(col.Observation, col.Condition) {
			if err := checkToken(t); err != nil {
				p("%v", err)
			}
		}
		// codeOK checks a code of true_codes, false_codes or levels: a
		// gender for a Patient column, a token otherwise.
		codeOK := func(t string) error {
			if col.Patient == PatientGender {
				if !slices.Contains(genders, t) {
					return fmt.Errorf("%q is not a gender code (%s)", t, strings.Join(genders, ", "))
				}
				return nil
			}
			return checkToken(t)
		}

		switch col.Type {
		case TypeNumeric:
			if col.Patient != "" && col.Patient != PatientAge {
				p("patient: %q cannot be numeric (only %s is)", col.Patient, PatientAge)
			}
			if col.Patient == PatientAge && m.ReferenceDate == "" {
				p("patient: age needs the mapping's reference_date")
			}
			if len(col.Condition) > 0 {
				p("a Condition column must be of type presence")
			}
			if len(col.Observation) > 0 && col.Unit == "" {
				p("unit is empty: give the UCUM unit its values are in (\"1\" for a plain number)")
			}
			if !slices.Contains([]string{CombineLatest, CombineMean, CombineMax, CombineMin}, cc.combine) {
				p("combine: %q, want latest, mean, max or min", col.Combine)
			}
			cc.convert = map[string]float64{}
			for u, f := range col.Convert {
				switch {
				case u == "" || u == col.Unit:
					p("convert: unit %q: not a different unit from %q", u, col.Unit)
				case !(f > 0) || math.IsInf(f, 0):
					p("convert: %s: factor %v, want a finite number > 0", u, f)
				}
				cc.convert[u] = f
			}
		case TypeBoolean:
			if col.Patient != "" && col.Patient != PatientGender {
				p("patient: %q cannot be boolean (only %s is)", col.Patient, PatientGender)
			}
			if len(col.Condition) > 0 {
				p("a Condition column must be of type presence")
			}
			if col.Patient == PatientGender && len(col.TrueCodes)+len(col.FalseCodes) == 0 {
				p("a boolean gender column needs true_codes and false_codes")
			}
			if cc.combine != CombineLatest && cc.combine != CombineAny {
				p("combine: %q, want latest or any", col.Combine)
			}
			cc.truth = map[string]float64{}
			for v, list := range [][]string{col.FalseCodes, col.TrueCodes} {
				for _, t := range list {
					if err := codeOK(t); err != nil {
						p("%v", err)
					} else if _, dup := cc.truth[t]; dup {
						p("%q is in both true_codes and false_codes, or twice", t)
					}
					cc.truth[t] = float64(v)
				}
			}
		case TypeCategorical:
			if col.Patient != "" && col.Patient != PatientGender {
				p("patient: %q cannot be categorical (only %s is)", col.Patient, PatientGender)
			}
			if len(col.Condition) > 0 {
				p("a Condition column must be of type presence")
			}
			if len(col.Levels) < 2 {
				p("levels: %d, want at least 2 (the first is the reference level)", len(col.Levels))
			}
			if cc.combine != CombineLatest {
				p("combine: %q, a categorical column only takes latest", col.Combine)
			}
			cc.levels = map[string]int{}
			seenLevel := map[string]bool{}
			for k, l := range col.Levels {
				if l.Name == "" || seenLevel[l.Name] {
					p("levels[%d]: level name %q is empty or repeated", k, l.Name)
				}
				seenLevel[l.Name] = true
				if len(l.Codes) == 0 {
					p("levels[%d] %s: no codes", k, l.Name)
				}
				for _, t := range l.Codes {
					if err := codeOK(t); err != nil {
						p("levels[%d] %s: %v", k, l.Name, err)
					} else if j, dup := cc.levels[t]; dup {
						p("levels[%d] %s: code %q is also level %s's", k, l.Name, t, col.Levels[j].Name)
					}
					cc.levels[t] = k
				}
			}
		case TypePresence:
			if col.Patient != "" {
				p("patient: a Patient field cannot be of type presence")
			}
			if col.Combine != "" {
				p("combine: a presence column does not combine values")
			}
		case "":
			p("type is empty: want %s, %s, %s or %s", TypeNumeric, TypeBoolean, TypeCategorical, TypePresence)
		default:
			p("type: %q, want %s, %s, %s or %s", col.Type, TypeNumeric, TypeBoolean, TypeCategorical, TypePresence)
		}
		known := slices.Contains([]string{TypeNumeric, TypeBoolean, TypeCategorical, TypePresence}, col.Type)
		switch {
		case !known:
		case col.Type != TypeNumeric && (col.Unit != "" || len(col.Convert) > 0):
			p("unit and convert are for numeric columns")
		case col.Type == TypeNumeric && col.Patient != "" && (col.Unit != "" || len(col.Convert) > 0):
			p("unit and convert are for Observation columns")
		}
		if known && col.Type != TypeBoolean && len(col.TrueCodes)+len(col.FalseCodes) > 0 {
			p("true_codes and false_codes are for boolean columns")
		}
		if known && col.Type != TypeCategorical && len(col.Levels) > 0 {
			p("levels are for categorical columns")
		}
		switch col.Patient {
		case "", PatientAge, PatientGender:
		default:
			p("patient: %q, want %s or %s", col.Patient, PatientAge, PatientGender)
		}

		if col.Type == TypeCategorical {
			if seenCategorical == "" {
				seenCategorical = col.Name
			}
		} else if seenCategorical != "" && col.Type != "" {
			p("comes after the categorical column %s: list numeric, boolean and presence columns first (their inputs precede the one-hot ones)", seenCategorical)
		}
		for _, t := range col.Observation {
			c.obs[t] = append(c.obs[t], i)
		}
		for _, t := range col.Condition {
			c.cond[t] = append(c.cond[t], i)
		}
		c.needObs = c.needObs || len(col.Observation) > 0
		c.needCond = c.needCond || len(col.Condition) > 0
		c.cols = append(c.cols, cc)
	}
	if len(probs) > 0 {
		return nil, &MappingError{Problems: probs}
	}
	return c, nil
}

// decimalComplement is 1 - f computed in decimal: 1 - 0.34 is 0.66, not
// float64's 0.6599999999999999, which would round some split sizes down
// by one.
func decimalComplement(f float64) float64 {
	v, err := strconv.ParseFloat(strconv.FormatFloat(1-f, 'g', 15, 64), 64)
	if err != nil {
		return 1 - f
	}
	return v
}

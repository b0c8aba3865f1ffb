package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// The line types decode one NDJSON line into samply's R4 model, plus the
// resourceType (samply's structs have no field for it: they only write it).
// A few fields are shadowed by a field of the same JSON name one level up,
// which encoding/json prefers:
//
//   - Observation.status and Consent.status as pointers, so that an absent
//     status is an error instead of samply's zero value (registered,
//     draft);
//   - valueQuantity, top level and in components, to keep the value as raw
//     JSON: samply's json.Number accepts a quoted "12" (FHIR decimals are
//     JSON numbers) and rejects "abc" without saying which element.

type patientLine struct {
	ResourceType string `json:"resourceType"`
	fhir.Patient
}

type observationLine struct {
	ResourceType  string                  `json:"resourceType"`
	Status        *fhir.ObservationStatus `json:"status"`
	ValueQuantity *quantity               `json:"valueQuantity"`
	Component     []component             `json:"component"`
	fhir.Observation
}

type component struct {
	ValueQuantity *quantity `json:"valueQuantity"`
	fhir.ObservationComponent
}

type quantity struct {
	Value      json.RawMessage          `json:"value"`
	Comparator *fhir.QuantityComparator `json:"comparator"`
	Unit       *string                  `json:"unit"`
	System     *string                  `json:"system"`
	Code       *string                  `json:"code"`
}

type conditionLine struct {
	ResourceType string `json:"resourceType"`
	fhir.Condition
}

type consentLine struct {
	ResourceType string             `json:"resourceType"`
	Status       *fhir.ConsentState `json:"status"`
	fhir.Consent
}

func (l *patientLine) header() (string, string)     { return l.ResourceType, deref(l.Id) }
func (l *observationLine) header() (string, string) { return l.ResourceType, deref(l.Id) }
func (l *conditionLine) header() (string, string)   { return l.ResourceType, deref(l.Id) }
func (l *consentLine) header() (string, string)     { return l.ResourceType, deref(l.Id) }

type resourceLine interface {
	header() (resourceType, id string)
}

// decodeLine parses one line into v, which must be freshly zeroed, and
// checks its resourceType. Errors are ResourceErrors.
func decodeLine(r *Reader, line []byte, want string, v resourceLine) error {
	err := json.Unmarshal(line, v)
	typ, id := v.header()
	if err != nil {
		if typ == "" || id == "" {
			// A custom unmarshaller's error stops decoding early; the
			// header may still be readable.
			var h header
			_ = json.Unmarshal(line, &h)
			typ, id = h.ResourceType, h.ID
		}
		return &ResourceError{File: r.Name(), Line: r.Line(), Type: typ, ID: id, Err: describeJSON(err)}
	}
	switch {
	case typ == "":
		return &ResourceError{File: r.Name(), Line: r.Line(), ID: id, Err: errors.New("no resourceType")}
	case typ != want:
		return &ResourceError{File: r.Name(), Line: r.Line(), Type: typ, ID: id,
			Err: fmt.Errorf("resourceType is %s, but the manifest lists this file as %s", typ, want)}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// patientRef returns the id a reference to a Patient names: "Patient/123",
// or an absolute URL ending in Patient/123, with or without a
// /_history/<version> suffix. ok is false for a reference to another
// resource type or without a literal reference (identifier only).
func patientRef(ref *fhir.Reference) (id string, ok bool) {
	if ref == nil || ref.Reference == nil {
		return "", false
	}
	s := *ref.Reference
	if i := strings.Index(s, "/_history/"); i >= 0 {
		s = s[:i]
	}
	i := strings.LastIndex(s, "Patient/")
	if i < 0 || (i > 0 && s[i-1] != '/') {
		return "", false
	}
	id = s[i+len("Patient/"):]
	if id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// noTime orders before every real time: a value without an effective time
// loses to any value with one.
const noTime = int64(-1 << 63)

// parseDateTime parses a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD,
// or a date with a time and a zone) to the start of the period it names.
func parseDateTime(s string) (time.Time, error) {
	var layout string
	switch len(s) {
	case 4:
		layout = "2006"
	case 7:
		layout = "2006-01"
	case 10:
		layout = time.DateOnly
	default:
		layout = time.RFC3339
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a FHIR date or dateTime", s)
	}
	return t, nil
}

// ageAt is the age in completed years on ref of someone born on birthDate
// (YYYY, YYYY-MM or YYYY-MM-DD). ok is false when a partial birth date
// leaves the age ambiguous (born in 1974, reference date in mid-year).
func ageAt(birthDate string, ref time.Time) (age int, ok bool, err error) {
	first, err := parseDateTime(birthDate)
	if err != nil || len(birthDate) > 10 {
		return 0, false, fmt.Errorf("birthDate: %q is not a FHIR date", birthDate)
	}
	last := first // the last day the partial date can mean
	switch len(birthDate) {
	case 4:
		last = first.AddDate(1, 0, -1)
	case 7:
		last = first.AddDate(0, 1, -1)
	}
	if first.After(ref) {
		return 0, false, fmt.Errorf("birthDate %s is after the reference date %s", birthDate, ref.Format(time.DateOnly))
	}
	a, b := completedYears(first, ref), completedYears(last, ref)
	return a, a == b, nil
}

func completedYears(born, on time.Time) int {
	y := on.Year() - born.Year()
	if on.Month() < born.Month() || (on.Month() == born.Month() && on.Day() < born.Day()) {
		y--
	}
	return y
}

// observationTime is the time "latest" orders an Observation's values by:
// effectiveDateTime, effectiveInstant or the start of effectivePeriod, in
// milliseconds; noTime when it has none.
func observationTime(o *observationLine) (int64, error) {
	var s, field string
	switch {
	case o.EffectiveDateTime != nil:
		s, field = *o.EffectiveDateTime, "effectiveDateTime"
	case o.EffectiveInstant != nil:
		s, field = *o.EffectiveInstant, "effectiveInstant"
	case o.EffectivePeriod != nil && o.EffectivePeriod.Start != nil:
		s, field = *o.EffectivePeriod.Start, "effectivePeriod.start"
	default:
		return noTime, nil
	}
	t, err := parseDateTime(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", field, err)
	}
	return t.UnixMilli(), nil
}

// decimal parses a FHIR decimal: a JSON number (not a string), finite in
// float64.
func decimal(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("missing")
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, fmt.Errorf("not a number (got %s)", raw)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, fmt.Errorf("not a number in range (got %s)", raw)
	}
	return v, nil
}

// tokens yields system|code for every coding of a CodeableConcept.
func tokens(cc *fhir.CodeableConcept) []string {
	if cc == nil {
		return nil
	}
	out := make([]string, 0, len(cc.Coding))
	for _, c := range cc.Coding {
		if c.Code != nil {
			out = append(out, deref(c.System)+"|"+*c.Code)
		}
	}
	return out
}

// hasCoding reports whether cc has a coding with this system and code.
func hasCoding(cc *fhir.CodeableConcept, system, code string) bool {
	if cc == nil {
		return false
	}
	for _, c := range cc.Coding {
		if deref(c.System) == system && deref(c.Code) == code {
			return true
		}
	}
	return false
}

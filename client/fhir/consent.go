package fhir

import (
	"errors"
	"fmt"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Research consent.
//
// A Consent bears on this data when its scope is research (code research
// in ConsentScopeSystem) and its status is active; every other Consent is
// ignored (counted in Report.Skipped). Its decision is its top-level
// provision.type. Nested provisions (exceptions for some actors, data,
// purposes or periods) are not interpreted: a permit with any nested deny
// counts as a deny, because a loader that cannot tell which part of the
// record an exception covers must not use the record. A research Consent
// without provision.type decides nothing and is ignored.
//
// Per patient the latest decision by Consent.dateTime wins, whatever the
// file order; a Consent without dateTime is older than any with one; at
// equal times a deny wins. In ConsentOptOut mode a patient whose decision
// is deny is excluded; in ConsentOptIn mode every patient whose decision
// is not permit is.

// ConsentScopeSystem is the code system of Consent.scope
// (http://hl7.org/fhir/R4/codesystem-consentscope.html).
const ConsentScopeSystem = "http://terminology.hl7.org/CodeSystem/consentscope"

// ConsentCategoryLOINC is the usual Consent.category, LOINC 59284-0
// "Patient Consent".
const ConsentCategoryLOINC = "59284-0"

type decision int8

const (
	undecided decision = iota
	permit
	deny
)

func (d decision) String() string {
	switch d {
	case permit:
		return "permit"
	case deny:
		return "deny"
	}
	return "none"
}

// consentState is one patient's latest research decision.
type consentState struct {
	d  decision
	at int64 // Consent.dateTime in ms, noTime when absent
}

// update applies a newer (or equally old) decision.
func (s *consentState) update(d decision, at int64) {
	if s.d == undecided || at > s.at || (at == s.at && d > s.d) {
		s.d, s.at = d, at
	}
}

// excluded reports whether the patient is left out under the policy.
func (s consentState) excluded(optIn bool) bool {
	if optIn {
		return s.d != permit
	}
	return s.d == deny
}

var errNoConsentStatus = errors.New("status is missing (required in R4)")

// researchDecision classifies one Consent. skip, when not "", says why it
// decides nothing for research.
func researchDecision(c *consentLine) (patientID string, d decision, at int64, skip string, err error) {
	if c.Status == nil {
		return "", 0, 0, "", errNoConsentStatus
	}
	at = noTime
	if c.DateTime != nil {
		t, err := parseDateTime(*c.DateTime)
		if err != nil {
			return "", 0, 0, "", fmt.Errorf("dateTime: %v", err)
		}
		at = t.UnixMilli()
	}
	if !hasCoding(&c.Scope, ConsentScopeSystem, "research") {
		return "", 0, 0, "Consent: scope is not research", nil
	}
	if *c.Status != fhir.ConsentStateActive {
		return "", 0, 0, "Consent: research, status " + c.Status.Code(), nil
	}
	if c.Provision == nil || c.Provision.Type == nil {
		return "", 0, 0, "Consent: research, no provision.type", nil
	}
	id, ok := patientRef(c.Patient)
	if !ok {
		return "", 0, 0, "Consent: research, no Patient reference", nil
	}
	d = permit
	if *c.Provision.Type == fhir.ConsentProvisionTypeDeny || nestedDeny(c.Provision.Provision) {
		d = deny
	}
	return id, d, at, "", nil
}

func nestedDeny(ps []fhir.ConsentProvision) bool {
	for i := range ps {
		p := &ps[i]
		if (p.Type != nil && *p.Type == fhir.ConsentProvisionTypeDeny) || nestedDeny(p.Provision) {
			return true
		}
	}
	return false
}

// Package fhir loads a hospital's FHIR R4 Bulk Data export into the
// table a federated model trains on, honouring the patients' research
// consent.
//
// A Bulk Data export ($export, https://hl7.org/fhir/uv/bulkdata/) is a
// manifest (Manifest) and NDJSON files of one resource type each. Load
// reads Patient, Consent, Condition and Observation files, in that order,
// each once and as a stream, and joins them on the patient reference
// (Patient/<id>) into one row per patient, in Patient file order. What
// becomes a column is a Mapping (YAML, LoadMapping; or built in Go): which
// LOINC, SNOMED CT or ICD-10 codes feed which feature column, how repeated
// values combine, which unit each column is in, which Conditions make the
// label positive. Export and LoadHeart connect it to the shipped UCI
// heart-disease data: an exported hospital loads back into exactly
// train.LoadHeart's datasets.
//
// # Streaming and memory
//
// Reader reads one resource per line with no line-length limit, in memory
// bounded by the longest line. Load keeps a few words per patient and
// column, so its memory grows with the number of patients, never with the
// number of Observations: BenchmarkLoadLarge measures it on a synthetic
// export of any size (FEDLEDGER_FHIR_BENCH_BYTES).
//
// # Errors
//
// A bad resource stops the load with a *ResourceError naming the file, the
// line and, when the line parses far enough, the resource:
//
//	fhir: Observation.ndjson:1234 (Observation/abc): valueQuantity.value: not a number (got "abc") (column chol, code http://loinc.org|2093-3)
//
// A value in a unit the mapping does not accept wraps ErrUnit; a bad
// mapping is a *MappingError listing every problem (errors.Is ErrMapping);
// a bad manifest wraps ErrManifest.
//
// # Consent
//
// An active Consent with scope research
// (http://terminology.hl7.org/CodeSystem/consentscope) decides by its
// provision.type; per patient the latest by dateTime wins. By default
// (opt-out) a patient whose decision is deny is excluded; opt-in excludes
// everyone without a permit. Consents of other scopes are ignored.
// Excluded patients' clinical resources are not looked at. See consent.go
// for the rules on nested provisions and ties.
//
// # The resource model
//
// Resources decode into github.com/samply/golang-fhir-models (package
// fhir-models/fhir, v0.3.2): plain Go structs per R4 resource with
// encoding/json tags, so a line decodes with the standard library and
// decimals stay exact (json.Number). The alternative, google/fhir/go, is
// protobuf-based: a large generated code base (every R4 resource and
// datatype as proto messages), and FHIR JSON needs its own marshaller
// (jsonformat) configured with a FHIR version and a time zone, because
// protobuf's JSON mapping is not FHIR's; none of that buys anything for
// reading four resource types into numbers.
//
// samply's types parse the R4 resources we test with (testdata/hl7,
// hand-written in the shape of HL7's official examples: see its README)
// but have limits, which this package works around rather than hides:
//
//   - an absent required code (Observation.status, Consent.status) decodes
//     as the enum's zero value, "registered" or "draft", so those two
//     fields are shadowed by pointers and an absent status is an error;
//   - Quantity.value is a json.Number, which accepts a quoted "12" (FHIR
//     decimals are JSON numbers) and fails on "abc" without naming the
//     element, so valueQuantity is decoded raw and checked here;
//   - the structs have no resourceType field and no contained resources
//     (contained resources are dropped; Load does not need them), and
//     enum errors do not name their element.
//
// # What it does not do
//
// It does not talk to a FHIR server (download the export first; remote
// URLs in the manifest are an error), does not validate resources against
// profiles or terminologies, and does not impute: a patient without a value
// for some column is dropped and counted. Training is package train's:
// Table.Datasets hands the rows to train.FromTable.
package fhir

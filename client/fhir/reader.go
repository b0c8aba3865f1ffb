package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Reader reads an NDJSON file one line at a time, in memory bounded by the
// longest line, not by the file: a line that does not fit the read buffer
// is assembled in a scratch buffer that is reused for the next long line.
// There is no line-length limit. Blank lines (only white space) are skipped
// but counted, so Line is the line number an editor shows.
type Reader struct {
	br      *bufio.Reader
	name    string
	line    int
	scratch []byte
	err     error // sticky: returned by every Next after the first
}

// maxKeptScratch bounds the scratch buffer kept once its line has been
// used: one huge line does not pin its buffer for the rest of the file.
const maxKeptScratch = 1 << 20

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// NewReader reads NDJSON from r; name (the file's name) prefixes errors.
func NewReader(r io.Reader, name string) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), name: name}
}

// Name is the name errors carry.
func (r *Reader) Name() string { return r.name }

// Line is the 1-based number of the line Next last returned.
func (r *Reader) Line() int { return r.line }

// Next returns the next non-blank line, without surrounding white space or
// its line ending. The slice is valid until the next call. At the end of
// the input it returns io.EOF; a read error names the file and line.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if cap(r.scratch) > maxKeptScratch {
		r.scratch = nil // the long line it held is no longer in use
	}
	for {
		line, err := r.readLine()
		if err != nil && (err != io.EOF || len(line) == 0) {
			// A read error drops the partial line: it is not the file's.
			r.err = r.wrapRead(err)
			return nil, r.err
		}
		if err != nil {
			// The last line had no newline: return it now, EOF next.
			r.err = io.EOF
		}
		r.line++
		if r.line == 1 {
			line = bytes.TrimPrefix(line, utf8BOM)
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, nil
		}
		if r.err != nil {
			return nil, r.err
		}
	}
}

func (r *Reader) wrapRead(err error) error {
	if err == io.EOF {
		return io.EOF
	}
	return fmt.Errorf("fhir: %s:%d: read: %w", r.name, r.line+1, err)
}

// readLine returns the next line with its newline. A line that fits the
// bufio buffer is returned in place, without a copy.
func (r *Reader) readLine() ([]byte, error) {
	s, err := r.br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return s, err
	}
	r.scratch = append(r.scratch[:0], s...)
	for err == bufio.ErrBufferFull {
		s, err = r.br.ReadSlice('\n')
		r.scratch = append(r.scratch, s...)
	}
	return r.scratch, err
}

// ResourceError is a problem with one resource of an NDJSON file: the file,
// the line, and, when the line could be parsed far enough, the resource
// type and id.
type ResourceError struct {
	File string
	Line int
	Type string // resourceType, "" when unknown
	ID   string // id, "" when unknown
	Err  error
}

func (e *ResourceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fhir: %s:%d", e.File, e.Line)
	switch {
	case e.Type != "" && e.ID != "":
		fmt.Fprintf(&b, " (%s/%s)", e.Type, e.ID)
	case e.Type != "":
		fmt.Fprintf(&b, " (%s)", e.Type)
	case e.ID != "":
		fmt.Fprintf(&b, " (id %s)", e.ID)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *ResourceError) Unwrap() error { return e.Err }

// header is what every resource line is parsed for when the full decode
// fails before reaching them, so the error can still name the resource.
type header struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
}

// describeJSON turns an encoding/json error into one that names the FHIR
// element (valueQuantity.value) rather than Go types, where it can.
func describeJSON(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("not valid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		return fmt.Errorf("%s: %s, got %s", fhirPath(te.Field), wantKind(te.Type), jsonKind(te.Value))
	default:
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
}

// fhirPath drops the Go names of embedded structs (they start with an upper
// case letter; FHIR element names never do) from an encoding/json field
// path.
func fhirPath(field string) string {
	var keep []string
	for _, p := range strings.Split(field, ".") {
		if p != "" && !(p[0] >= 'A' && p[0] <= 'Z') {
			keep = append(keep, p)
		}
	}
	if len(keep) == 0 {
		return "(resource)"
	}
	return strings.Join(keep, ".")
}

var numberType = reflect.TypeFor[json.Number]()

func wantKind(t reflect.Type) string {
	if t == nil {
		return "wrong type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == numberType {
		return "not a number"
	}
	switch t.Kind() {
	case reflect.String:
		return "not a string"
	case reflect.Bool:
		return "not true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "not an integer"
	case reflect.Float32, reflect.Float64:
		return "not a number"
	case reflect.Slice, reflect.Array:
		return "not an array"
	case reflect.Struct, reflect.Map:
		return "not an object"
	}
	return "wrong type"
}

func jsonKind(v string) string {
	switch v {
	case "array", "object", "string", "number", "bool":
		if v == "bool" {
			return "true or false"
		}
		if v == "array" || v == "object" {
			return "an " + v
		}
		return "a " + v
	}
	return v
}

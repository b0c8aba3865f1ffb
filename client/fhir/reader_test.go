package fhir

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, r *Reader) (lines []string, nums []int) {
	t.Helper()
	for {
		l, err := r.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		lines, nums = append(lines, string(l)), append(nums, r.Line())
	}
}

func TestReaderLines(t *testing.T) {
	in := "\xEF\xBB\xBF{\"a\":1}\r\n\n   \n\t{\"b\":2}  \n{\"c\":3}"
	// One byte at a time: the result must not depend on how reads split.
	lines, nums := readAll(t, NewReader(iotest.OneByteReader(strings.NewReader(in)), "x.ndjson"))
	want := []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", lines, want)
	}
	if len(nums) != 3 || nums[0] != 1 || nums[1] != 4 || nums[2] != 5 {
		t.Errorf("line numbers %v, want [1 4 5]", nums)
	}
}

// TestReaderLongLines reads lines far longer than the read buffer (and
// than bufio.Scanner's default 64 KiB limit).
func TestReaderLongLines(t *testing.T) {
	long := `{"resourceType":"Patient","id":"p","text":{"div":"` + strings.Repeat("x", 5<<20) + `"}}`
	long2 := strings.Replace(long, "x", "y", 3<<20)
	in := long + "\n" + `{"short":1}` + "\n" + long2 + "\n"
	lines, nums := readAll(t, NewReader(strings.NewReader(in), "big.ndjson"))
	if len(lines) != 3 || lines[0] != long || lines[1] != `{"short":1}` || lines[2] != long2 {
		t.Fatalf("got %d lines of lengths %d", len(lines), len(lines[0]))
	}
	if nums[2] != 3 {
		t.Errorf("line numbers %v", nums)
	}
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := NewReader(io.MultiReader(strings.NewReader("{}\n{}\n{\"x\""), iotest.ErrReader(boom)), "Observation.ndjson")
	for i := 0; i < 2; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.Next()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "fhir: Observation.ndjson:3: read: disk on fire") {
		t.Errorf("got %v", err)
	}
	if _, again := r.Next(); again != err {
		t.Errorf("the error is not sticky: %v", again)
	}
}

// heartFuzzLoader is a loader with a compiled mapping and one patient, p.
func heartFuzzLoader(t testing.TB, c *compiled) *loader {
	l := &loader{c: c, rep: &Report{Resources: map[string]int{}, MissingByColumn: map[string]int{}, Skipped: map[string]int{}},
		ids: map[string]int{}, ncol: len(c.cols)}
	if _, err := l.read(strings.NewReader(patientJSON("p", "female", "1950-05-05")), "Patient.ndjson", "Patient"); err != nil {
		t.Fatal(err)
	}
	return l
}

// FuzzNDJSON feeds arbitrary bytes to the reader and to every resource
// decoder the loader has, with the heart mapping. Nothing may panic; every
// error must name the file; the table must still build.
func FuzzNDJSON(f *testing.F) {
	seeds := []string{
		"",
		"\n\n\n",
		patientJSON("q", "male", "1970-01-01"),
		patientJSON("q", "unknown", "1970"),
		obs("o", "p", SystemLOINC, "8480-6", "2020-01-01", qty("120", "mm[Hg]")),
		obs("o", "p", SystemLOINC, "8480-6", "2020-01-01T10:00:00Z", qty("16", "kPa")),
		obs("o", "p", SystemLOINC, "8480-6", "2020", `"valueQuantity":{"value":"abc"}`),
		obs("o", "p", SystemLOINC, "89273-7", "", `"valueQuantity":{"value":-1e308,"code":"/min","comparator":"<"}`),
		obs("o", "p", SystemSNOMED, "29857009", "", coded(SystemSNOMED, "429559004")),
		obs("o", "p", SystemSNOMED, "194828000", "", `"valueBoolean":true`),
		obs("o", "p", SystemLOINC, "1558-6", "", coded(interp, "H")),
		`{"resourceType":"Observation","id":"bp","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/p"},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":107,"code":"mm[Hg]"}}]}`,
		cond("c", "p", SystemSNOMED, "53741008", ""),
		consentJSON("k", "p", "research", "active", "deny", "2020-01-01"),
		`{"resourceType":"Consent","id":"c6","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"research"}]},"patient":{"reference":"Patient/p"},"provision":{"type":"permit","provision":[{"type":"deny"}]}}`,
		`{"resourceType":`,
		`[1,2,3]`,
		`null`,
		`{"resourceType":"Observation","status":null}`,
		"{\"a\":\"\xff\xfe\"}",
		strings.Repeat("[", 20000),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
		f.Add([]byte(s + "\n" + s + "\r\n"))
	}
	c, err := compile(HeartMapping())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), "x.ndjson")
		for {
			line, err := r.Next()
			if err != nil {
				if err != io.EOF {
					t.Fatalf("reading from memory failed: %v", err)
				}
				break
			}
			if len(line) == 0 || bytes.IndexByte(line, '\n') >= 0 {
				t.Fatalf("line %d: %q", r.Line(), line)
			}
		}
		for _, typ := range []string{"Patient", "Consent", "Condition", "Observation"} {
			l := heartFuzzLoader(t, c)
			name := typ + ".ndjson"
			if _, err := l.read(bytes.NewReader(data), name, typ); err != nil && !strings.HasPrefix(err.Error(), "fhir: "+name+":") {
				t.Fatalf("%s: error does not name the file: %v", typ, err)
			}
			tab := l.table("fuzz")
			if len(tab.X) != len(tab.Y) || len(tab.X) != len(tab.PatientIDs) {
				t.Fatalf("table of %d rows, %d labels, %d ids", len(tab.X), len(tab.Y), len(tab.PatientIDs))
			}
		}
	})
}

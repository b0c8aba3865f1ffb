package fhir

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"
)

// synthetic describes a synthetic heart-coded export: Patients patients,
// each with Repeats Observations of every heart code at increasing times.
type synthetic struct {
	Manifest string
	Bytes    int64 // of all its files
	Patients int
	// LastTrestbps and MaxThalach are patient 0's latest systolic pressure
	// and highest exercise heart rate, what the heart mapping must load.
	LastTrestbps, MaxThalach float64
}

// writeSynthetic writes a synthetic export of about target bytes into dir.
// Lines are built by hand, not by encoding/json, so that writing a
// gigabyte takes seconds.
func writeSynthetic(tb testing.TB, dir string, target int64, repeats int) synthetic {
	tb.Helper()
	rng := rand.New(rand.NewSource(1))
	s := synthetic{Manifest: filepath.Join(dir, "manifest.json")}
	type file struct {
		f *os.File
		w *bufio.Writer
		n int
	}
	files := map[string]*file{}
	types := []string{"Patient", "Observation", "Condition", "Consent"}
	for _, typ := range types {
		f, err := os.Create(filepath.Join(dir, typ+".ndjson"))
		if err != nil {
			tb.Fatal(err)
		}
		files[typ] = &file{f: f, w: bufio.NewWriterSize(f, 1<<20)}
	}
	put := func(typ string, b []byte) {
		fl := files[typ]
		fl.w.Write(b)
		fl.n++
		s.Bytes += int64(len(b))
	}
	type code struct{ system, code, unit, value string }
	cp := []string{"429559004", "371807002", "274668005", "161971004"}
	ecg := []string{"164854000", "428750005", "164873001"}
	codes := []code{
		{SystemLOINC, "8480-6", "mm[Hg]", ""}, {SystemLOINC, "2093-3", "mg/dL", ""}, {SystemLOINC, "89273-7", "/min", ""},
		{SystemSNOMED, "26141007", "mm", ""}, {SystemLOINC, "1558-6", "", "fbs"}, {SystemSNOMED, "194828000", "", "exang"},
		{SystemSNOMED, "29857009", "", "cp"}, {SystemLOINC, "8601-7", "", "restecg"},
	}
	start := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	var b []byte
	for p := 0; s.Bytes < target || p < 2; p++ {
		id := fmt.Sprintf("syn-%07d", p)
		gender := "male"
		if p%2 == 1 {
			gender = "female"
		}
		b = fmt.Appendf(b[:0], `{"resourceType":"Patient","id":%q,"gender":%q,"birthDate":"%d-06-15"}`+"\n", id, gender, 1930+p%50)
		put("Patient", b)
		b = fmt.Appendf(b[:0], `{"resourceType":"Consent","id":"%s-c","status":"active","scope":{"coding":[{"system":%q,"code":"research"}]},"category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/%s"},"dateTime":"1999-01-01","provision":{"type":"permit"}}`+"\n", id, ConsentScopeSystem, id)
		put("Consent", b)
		if p%3 != 0 {
			b = fmt.Appendf(b[:0], `{"resourceType":"Condition","id":"%s-cad","verificationStatus":{"coding":[{"system":%q,"code":"confirmed"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"53741008"}]},"subject":{"reference":"Patient/%s"}}`+"\n", id, conditionVerSystem, id)
			put("Condition", b)
		}
		for r := 0; r < repeats; r++ {
			when := start.Add(time.Duration(r) * 36 * time.Hour).Format(time.RFC3339)
			for k, c := range codes {
				b = fmt.Appendf(b[:0], `{"resourceType":"Observation","id":"%s-%d-%d","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"exam"}]}],"code":{"coding":[{"system":%q,"code":%q}]},"subject":{"reference":"Patient/%s"},"effectiveDateTime":%q,`,
					id, r, k, c.system, c.code, id, when)
				switch c.value {
				case "":
					v := float64(rng.Intn(2000)) / 10
					if p == 0 && c.code == "8480-6" {
						s.LastTrestbps = v
					}
					if p == 0 && c.code == "89273-7" && (r == 0 || v > s.MaxThalach) {
						s.MaxThalach = v
					}
					b = fmt.Appendf(b, `"valueQuantity":{"value":%s,"unit":%q,"system":"http://unitsofmeasure.org","code":%q}}`,
						strconv.FormatFloat(v, 'f', -1, 64), c.unit, c.unit)
				case "fbs":
					b = fmt.Appendf(b, `"valueCodeableConcept":{"coding":[{"system":%q,"code":%q}]}}`, interp, []string{"H", "N"}[rng.Intn(2)])
				case "exang":
					b = fmt.Appendf(b, `"valueBoolean":%v}`, rng.Intn(2) == 1)
				case "cp":
					b = fmt.Appendf(b, `"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":%q}]}}`, cp[rng.Intn(4)])
				case "restecg":
					b = fmt.Appendf(b, `"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":%q}]}}`, ecg[rng.Intn(3)])
				}
				b = append(b, '\n')
				put("Observation", b)
			}
		}
		s.Patients++
	}
	man := fmt.Sprintf(`{"transactionTime":"2024-01-01T00:00:00Z","request":"https://example.invalid/$export","requiresAccessToken":false,"output":[`)
	for i, typ := range types {
		fl := files[typ]
		if err := fl.w.Flush(); err != nil {
			tb.Fatal(err)
		}
		if err := fl.f.Close(); err != nil {
			tb.Fatal(err)
		}
		if i > 0 {
			man += ","
		}
		man += fmt.Sprintf(`{"type":%q,"url":"%s.ndjson","count":%d}`, typ, typ, fl.n)
	}
	man += `],"error":[]}`
	if err := os.WriteFile(s.Manifest, []byte(man), 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// heapPeak samples the bytes of in-use heap spans (runtime.MemStats
// HeapInuse, read through runtime/metrics, which does not stop the
// world) until Stop, and keeps the largest.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

var heapInUseMetrics = []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes"}

func heapInUse(s []metrics.Sample) uint64 {
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		n += x.Value.Uint64()
	}
	return n
}

func startHeapPeak(every time.Duration) *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		s := make([]metrics.Sample, len(heapInUseMetrics))
		for i, n := range heapInUseMetrics {
			s[i].Name = n
		}
		t := time.NewTicker(every)
		defer t.Stop()
		var peak uint64
		for {
			peak = max(peak, heapInUse(s))
			select {
			case <-h.stop:
				h.done <- max(peak, heapInUse(s))
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// Stop ends the sampling and returns the peak.
func (h *heapPeak) Stop() uint64 {
	close(h.stop)
	return <-h.done
}

// BenchmarkLoadLarge loads a synthetic export with many repeated
// Observations per patient and reports the peak heap in use against the
// export's size. The size is FEDLEDGER_FHIR_BENCH_BYTES (default 20 MB;
// 1e9 for a gigabyte); the files live in a temporary directory removed
// afterwards. Run it once:
//
//	FEDLEDGER_FHIR_BENCH_BYTES=1e9 go test ./client/fhir -run '^$' -bench LoadLarge -benchtime 1x
func BenchmarkLoadLarge(b *testing.B) {
	target := int64(20e6)
	if v := os.Getenv("FEDLEDGER_FHIR_BENCH_BYTES"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 1 {
			b.Fatalf("FEDLEDGER_FHIR_BENCH_BYTES=%q is not a size in bytes", v)
		}
		target = int64(f)
	}
	s := writeSynthetic(b, b.TempDir(), target, 50)
	m := HeartMapping()
	b.SetBytes(s.Bytes)
	b.ResetTimer()
	var peak uint64
	for i := 0; i < b.N; i++ {
		runtime.GC()
		h := startHeapPeak(time.Millisecond)
		tab, rep, err := Load(s.Manifest, m)
		peak = max(peak, h.Stop())
		if err != nil {
			b.Fatal(err)
		}
		if rep.Patients != s.Patients || len(tab.PatientIDs) != s.Patients {
			b.Fatalf("%d patients, %d rows, want %d", rep.Patients, len(tab.PatientIDs), s.Patients)
		}
	}
	b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
	b.ReportMetric(float64(s.Bytes)/1e6, "file-MB")
	b.ReportMetric(float64(peak)/float64(s.Bytes), "heap/file")
	b.ReportMetric(float64(s.Patients), "patients")
}

// TestSyntheticLoad checks what the benchmark loads: repeated values
// combine as the heart mapping says.
func TestSyntheticLoad(t *testing.T) {
	s := writeSynthetic(t, t.TempDir(), 1e6, 20)
	tab, rep, err := Load(s.Manifest, HeartMapping())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != s.Patients || rep.Resources["Observation"] != s.Patients*20*8 {
		t.Fatalf("report %+v for %d patients", rep, s.Patients)
	}
	r := row(t, tab, "syn-0000000")
	if r["trestbps"] != s.LastTrestbps || r["thalach"] != s.MaxThalach || r["age"] != 57 {
		t.Errorf("trestbps %v thalach %v age %v; want %v %v %v", r["trestbps"], r["thalach"], r["age"], s.LastTrestbps, s.MaxThalach, 57) // born 1930-06-15, on 1988-01-01
	}
}

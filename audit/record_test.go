package audit_test

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

func sampleRecord() *audit.Record {
	h := func(b byte) (x audit.Hash) {
		for i := range x {
			x[i] = b + byte(i)
		}
		return x
	}
	return &audit.Record{
		Kind: audit.KindRoundCompleted, StudyID: "heart-1", Round: 7,
		ParentModel: h(1), OutputModel: h(2),
		Contributions: []audit.Contribution{
			{Site: "site-a", UpdateHash: h(3), Samples: 10, DataManifest: h(7), Signature: bytes.Repeat([]byte{9}, 64)},
			{Site: "site-b", UpdateHash: h(4), Samples: 20, DataManifest: h(8), Signature: bytes.Repeat([]byte{8}, 64)},
		},
		AggregateHash: h(5), DecryptionShares: []audit.DecryptionShare{{Site: "site-a", ShareHash: h(9), Signature: bytes.Repeat([]byte{7}, 64)}},
		HEParamsID: "ckks-pn14", CollectiveKeyHash: h(6), Strategy: "fedavg",
		Hyperparameters:   []audit.Param{{"lr", "0.01"}, {"epochs", "3"}},
		BinaryVersion:     "v0.1.0",
		Countersignatures: []audit.Countersignature{{Site: "site-b", Signature: bytes.Repeat([]byte{6}, 64)}},
		KeyHolders:        []audit.KeyHolder{{Site: "site-a", Point: 1, Signature: bytes.Repeat([]byte{5}, 64)}},
		Certificates:      [][]byte{{0x30, 0x82, 1, 2}},
		Threshold:         2, Rounds: 20, OptimizerBefore: h(10), OptimizerAfter: h(11),
		Metrics:       []audit.Metric{{"auc", 0.87}, {"loss", math.Inf(1)}},
		ApprovedSites: []string{"site-a", "site-b", "site-c"}, MinContributors: 2,
		ExpiresAtUnixNs: 1_900_000_000_000_000_000,
		MemberID:        "site-c", MemberRole: "client", MemberRemoved: true,
		TimestampUnixNs: 1_800_000_000_000_000_000, SubmitterID: "coord",
	}
}

func TestRecordRoundTripIsCanonical(t *testing.T) {
	r := sampleRecord()
	b := r.Marshal()
	got, err := audit.UnmarshalRecord(b)
	if err != nil {
		t.Fatalf("UnmarshalRecord: %v", err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, r)
	}
	if !bytes.Equal(got.Marshal(), b) {
		t.Fatal("re-encoding differs")
	}
	if bytes.Equal((&audit.Record{Kind: audit.KindRoundCompleted, Round: 8}).Marshal(), (&audit.Record{Kind: audit.KindRoundCompleted, Round: 7}).Marshal()) {
		t.Fatal("different records encode equally")
	}
	// With the hospitals' evaluations: version 3, the same canonical round
	// trip; without them the encoding is version 2's, byte for byte.
	if b[0] != 2 {
		t.Fatalf("a record without evaluations is version %d", b[0])
	}
	r.Evaluations = []audit.Evaluation{{Site: "site-a", Metrics: []audit.Metric{{"global_test_accuracy", 0.8}, {"personal_test_auc", 0.9}}, Signature: bytes.Repeat([]byte{4}, 64)}}
	b3 := r.Marshal()
	got, err = audit.UnmarshalRecord(b3)
	if err != nil || !reflect.DeepEqual(got, r) || b3[0] != 3 || !bytes.Equal(b3[:len(b)], append([]byte{3}, b[1:]...)) {
		t.Fatalf("with evaluations: %v, version %d", err, b3[0])
	}
}

func TestUnmarshalRecordRejects(t *testing.T) {
	good := sampleRecord().Marshal()
	for n := 0; n < len(good); n++ {
		if _, err := audit.UnmarshalRecord(good[:n]); !errors.Is(err, audit.ErrMalformed) {
			t.Fatalf("prefix of %d/%d bytes: err = %v, want ErrMalformed", n, len(good), err)
		}
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	empty := (&audit.Record{Kind: audit.KindStudyCreated}).Marshal()
	cases := []struct {
		name  string
		in    []byte
		want  error
		field string
	}{
		{"trailing byte", append(bytes.Clone(good), 0), audit.ErrMalformed, "trailer"},
		{"bad version", mut(func(b []byte) []byte { b[0] = 1; return b }), audit.ErrVersion, "version"},
		{"future version", mut(func(b []byte) []byte { b[0] = 4; return b }), audit.ErrVersion, "version"},
		// Version 3 carries evaluations after every version-2 field; a
		// version-2 body under version 3 lacks them.
		{"version 3 without its evaluations", mut(func(b []byte) []byte { b[0] = 3; return b }), audit.ErrMalformed, "evaluations"},
		// And version 3 with an empty list is not canonical: Marshal writes
		// such a record as version 2.
		{"version 3 with no evaluations", mut(func(b []byte) []byte { b[0] = 3; return append(b, 0) }), audit.ErrNonCanonical, "record"},
		{"kind zero", mut(func(b []byte) []byte { b[1] = 0; return b }), audit.ErrMalformed, "kind"},
		{"kind unknown", mut(func(b []byte) []byte { b[1] = 99; return b }), audit.ErrMalformed, "kind"},
		// study id length 0 written as the non-minimal uvarint 0x80 0x00.
		{"non-minimal varint", append([]byte{2, 1, 0x80}, empty[2:]...), audit.ErrNonCanonical, "record"},
		{"oversize length", append([]byte{2, 1, 0xff, 0xff, 0x03}, empty[3:]...), audit.ErrMalformed, "study_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := audit.UnmarshalRecord(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var de *audit.DecodeError
			if !errors.As(err, &de) || de.Field != c.field {
				t.Fatalf("err = %v, want DecodeError on field %q", err, c.field)
			}
		})
	}
}

// validRecords are real records of every kind, hospital-signed, for seed
// corpora: a study, a key setup (key holders, certificates), a secure
// round (decryption shares, countersignatures), a plaintext round
// (certificates) and a failed round.
func validRecords(t testing.TB) []*audit.Record {
	p := audittest.NewPKI(t)
	now := time.Now().UnixNano()
	secure := p.NewBuilder(audittest.Options{Threshold: 2}, now)
	plain := p.NewBuilder(audittest.Options{ID: "plain"}, now)
	return []*audit.Record{secure.Study, secure.KeySetup, secure.Round(1, audittest.Model(0), audittest.Model(1), audittest.Sites...),
		plain.Round(2, audittest.Model(1), audittest.Model(2), "site-a", "site-b"), plain.Failed(3, audittest.Model(2))}
}

func FuzzUnmarshalRecord(f *testing.F) {
	f.Add(sampleRecord().Marshal())
	for _, r := range validRecords(f) {
		f.Add(r.Marshal())
	}
	f.Add((&audit.Record{Kind: audit.KindStudyCreated}).Marshal())
	withEval := sampleRecord()
	withEval.Evaluations = []audit.Evaluation{{Site: "site-a", Metrics: []audit.Metric{{"global_test_accuracy", 0.8}}, Signature: []byte{1}}}
	f.Add(withEval.Marshal())
	f.Add([]byte{})
	f.Add([]byte{1, 3, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := audit.UnmarshalRecord(b)
		if err != nil {
			if r != nil {
				t.Fatal("record returned with error")
			}
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatal("accepted a non-canonical encoding")
		}
	})
}

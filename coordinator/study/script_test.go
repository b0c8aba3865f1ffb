package study

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"

	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// TestScripts runs the protocol scenarios in testdata/: each file is a
// story of one study, a command per step and the machine's actions below
// it (regenerate with go test ./coordinator/study -run TestScripts
// -rewrite, then read the diff).
//
// Commands (each steps the machine once per site named, at the env's
// clock; hospitals sign honestly unless told badsig):
//
//	study [secure] sites=(a,b,c) k=2 t=2 rounds=2 [manual] [metrics]
//	      [resume=R] [completed=C] [failed=F] [model=m3] [optimizer=o2]
//	      [logged-key=kX] [saved-key=kX] [started]
//	tick [dt=10s]                    time passes
//	join a b / leave a / refuse a [round=1] [reason=...]
//	start [by=admin]
//	keyshare a [point=N] [badsig]
//	collective-key [key=k1] [err=...]
//	sharebox a from=1 to=2
//	keydone a [key=k1] [badsig]
//	saved [err=...]
//	update a [round=R] [parent=mX] [samples=N] [badsig] [wrongsite] [badeval] [nanfigure]
//	aggregated [agg=A1] [err=...]
//	sketch a [round=R] [agg=AX] [badsig]
//	share a [round=R] [agg=AX] [badsig]
//	combined [out=m1] [opt=o1] [err=...]
//	countersign a [round=R] [out=mX] [badsig]
//	recorded [err=...] [retry]
//	eval a [acc=0.8]
//	status
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := &scriptEnv{t: t, names: map[audit.Hash]string{}}
		datadriven.RunTest(t, path, env.handle)
	})
}

type scriptEnv struct {
	t       *testing.T
	m       *Machine
	now     time.Time
	t0      time.Time
	names   map[audit.Hash]string
	metrics bool
	done    bool
}

// hash is the Hash a script name stands for ("-" is zero).
func (e *scriptEnv) hash(name string) audit.Hash {
	if name == "-" || name == "" {
		return audit.Hash{}
	}
	h := sha256.Sum256([]byte(name))
	e.names[h] = name
	return h
}

func (e *scriptEnv) name(h audit.Hash) string {
	if h == (audit.Hash{}) {
		return "-"
	}
	if n, ok := e.names[h]; ok {
		return n
	}
	return fmt.Sprintf("%x", h[:4])
}

func obj(e *scriptEnv, name string) Object {
	return Object{Hash: e.hash(name), Size: uint64(len(name))}
}

func siteKey(site string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("site key " + site))
	return ed25519.NewKeyFromSeed(seed[:])
}

func identity(site string) Identity {
	return Identity{Site: site, Key: siteKey(site).Public().(ed25519.PublicKey), Cert: []byte("cert of " + site)}
}

func sign(site string, msg []byte, bad bool) []byte {
	if bad {
		msg = append(msg, '!')
	}
	return ed25519.Sign(siteKey(site), msg)
}

func arg(d *datadriven.TestData, key, def string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return strings.Join(a.Vals, ",")
		}
	}
	return def
}

func argInt(t *testing.T, d *datadriven.TestData, key string, def int) int {
	v := arg(d, key, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil {
		d.Fatalf(t, "%s=%s: %v", key, v, err)
	}
	return n
}

// sites are the bare arguments of a command (site names).
func sites(d *datadriven.TestData) []string {
	var out []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 && a.Key != "badsig" && a.Key != "retry" && a.Key != "wrongsite" && a.Key != "badeval" && a.Key != "nanfigure" {
			out = append(out, a.Key)
		}
	}
	return out
}

func (e *scriptEnv) handle(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	step := func(ev Event) {
		acts, err := e.m.Step(e.now, ev)
		e.print(&out, acts)
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
		}
	}
	roundArg := func() uint64 { return uint64(argInt(t, d, "round", int(e.m.round))) }
	if d.Cmd != "study" && (e.m == nil || e.m.r == nil && (d.Cmd == "share" || d.Cmd == "sketch" || d.Cmd == "countersign")) {
		if e.m == nil {
			return "no study\n"
		}
		e.m.r = &round{}
		defer func() { e.m.r = nil }()
	}
	switch d.Cmd {
	case "study":
		e.t0 = time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
		e.now = e.t0
		e.metrics = d.HasArg("metrics")
		bound, _ := strconv.ParseFloat(arg(d, "bound", "0"), 64)
		cfg := Config{Study: "heart", Secure: d.HasArg("secure"), HEParams: "ckks-test", Threshold: argInt(t, d, "t", 0), K: argInt(t, d, "k", 2), NormBound: bound,
			Rounds: argInt(t, d, "rounds", 2), Sites: strings.Split(arg(d, "sites", "a,b,c"), ","), ManualStart: d.HasArg("manual"),
			StartTimeout: time.Minute, KeySetupTimeout: time.Minute, RoundDeadline: time.Minute, PhaseTimeout: 30 * time.Second,
			FinalEvalTimeout: 30 * time.Second, RetryMin: time.Second, RetryMax: 8 * time.Second}
		start := Start{Round: uint64(argInt(t, d, "resume", 0)), Model: obj(e, arg(d, "model", "m0")), Optimizer: obj(e, arg(d, "optimizer", "-")),
			Completed: argInt(t, d, "completed", 0), Failed: argInt(t, d, "failed", 0), Started: d.HasArg("started")}
		if start.Optimizer.Hash == (audit.Hash{}) {
			start.Optimizer = Object{}
		}
		keySetup := func(key string) *KeySetup {
			k := &KeySetup{HEParams: "ckks-test", Threshold: cfg.Threshold, CollectiveKey: e.hash(key), Keys: map[string]ed25519.PublicKey{}, Certificates: map[string][]byte{}}
			for i, s := range cfg.Sites {
				k.Holders = append(k.Holders, audit.KeyHolder{Site: s, Point: uint64(i + 1)})
				k.Keys[s], k.Certificates[s] = identity(s).Key, identity(s).Cert
			}
			return k
		}
		if k := arg(d, "logged-key", ""); k != "" {
			start.LoggedKeySetup = keySetup(k)
		}
		if k := arg(d, "saved-key", ""); k != "" {
			start.SavedKeySetup = keySetup(k)
		}
		m, acts, err := New(cfg, start, e.now)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		e.m, e.done = m, false
		e.print(&out, acts)
	case "tick":
		dt, err := time.ParseDuration(arg(d, "dt", "1s"))
		if err != nil {
			d.Fatalf(t, "dt: %v", err)
		}
		e.now = e.now.Add(dt)
		step(Tick{})
	case "join":
		for _, s := range sites(d) {
			step(Joined{Site: s})
		}
	case "leave":
		for _, s := range sites(d) {
			step(Left{Site: s})
		}
	case "refuse":
		for _, s := range sites(d) {
			step(Refused{Site: s, Round: uint64(argInt(t, d, "round", 0)), Reason: arg(d, "reason", "policy")})
		}
	case "start":
		step(StartRequested{By: arg(d, "by", "admin")})
	case "keyshare":
		for _, s := range sites(d) {
			point := uint64(argInt(t, d, "point", int(e.m.ks.points[s])))
			x, pk := []byte("x25519 of "+s), []byte("pk share of "+s)
			step(KeyShareIn{From: identity(s), Point: point, X25519: x, PkShare: pk,
				Signature: sign(s, audit.KeyShareMessage("heart", s, point, x, sha256.Sum256(pk)), d.HasArg("badsig"))})
		}
	case "collective-key":
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		step(CollectiveKeyDone{Hash: e.hash(arg(d, "key", "k1")), Err: err})
	case "sharebox":
		for _, s := range sites(d) {
			step(ShareBoxIn{Site: s, From: uint64(argInt(t, d, "from", 0)), To: uint64(argInt(t, d, "to", 0)), Box: []byte("box")})
		}
	case "keydone":
		for _, s := range sites(d) {
			key := e.hash(arg(d, "key", "k1"))
			msg := audit.KeySetupMessage("heart", "ckks-test", uint32(e.m.cfg.Threshold), key, e.m.holders(nil))
			step(KeyDoneIn{Site: s, CollectiveKey: key, Signature: sign(s, msg, d.HasArg("badsig"))})
		}
	case "saved":
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		step(KeySetupSaved{Err: err})
	case "update":
		for _, s := range sites(d) {
			r := roundArg()
			parent := e.m.parent.Hash
			if p := arg(d, "parent", ""); p != "" {
				parent = e.hash(p)
			}
			payload := []byte(fmt.Sprintf("update of %s, round %d", s, r))
			e.names[sha256.Sum256(payload)] = "u" + s + strconv.Itoa(int(r))
			c := audit.Contribution{Site: s, UpdateHash: sha256.Sum256(payload), Samples: uint64(argInt(t, d, "samples", 10)), DataManifest: e.hash("data-" + s)}
			if d.HasArg("wrongsite") {
				c.Site = "mallory"
			}
			c.Signature = sign(s, c.Message("heart", r, parent), d.HasArg("badsig"))
			train, test := model.Metrics{Loss: 0.5, Accuracy: 0.7, N: 10}, model.Metrics{Loss: 0.6, Accuracy: 0.6, N: 5}
			ev := &audit.Evaluation{Site: s, Metrics: []audit.Metric{{Name: "global_test_accuracy", Value: 0.6}}}
			if d.HasArg("nanfigure") {
				ev.Metrics[0].Value = math.NaN() // signed, but not a figure
			}
			ev.Signature = sign(s, ev.Message("heart", r, parent), false)
			if d.HasArg("badeval") {
				ev.Metrics[0].Value = 0.99 // changed after the site signed it
			}
			step(UpdateIn{From: identity(s), Round: r, Parent: parent, Update: c, Payload: payload, Train: &train, ParentTest: &test, Evaluation: ev})
		}
	case "aggregated":
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		step(Aggregated{Round: roundArg(), Aggregate: obj(e, arg(d, "agg", "A"+strconv.Itoa(int(e.m.round)))), Err: err})
	case "share":
		for _, s := range sites(d) {
			r := roundArg()
			agg := e.m.r.aggregate.Hash
			if a := arg(d, "agg", ""); a != "" {
				agg = e.hash(a)
			}
			payload := []byte(fmt.Sprintf("share of %s, round %d", s, r))
			e.names[sha256.Sum256(payload)] = "s" + s + strconv.Itoa(int(r))
			ds := audit.DecryptionShare{Site: s, ShareHash: sha256.Sum256(payload)}
			manifest := audit.ManifestDigest("heart", r, e.m.parent.Hash, e.m.r.signed())
			ds.Signature = sign(s, ds.Message("heart", r, agg, manifest), d.HasArg("badsig"))
			step(ShareIn{Site: s, Round: r, Aggregate: agg, Share: ds, Payload: payload})
		}
	case "sketch":
		for _, s := range sites(d) {
			r := roundArg()
			agg := e.m.r.aggregate.Hash
			if a := arg(d, "agg", ""); a != "" {
				agg = e.hash(a)
			}
			sk := audit.Sketch{Site: s, Values: []byte("sketch of " + s)}
			manifest := audit.ManifestDigest("heart", r, e.m.parent.Hash, e.m.r.signed())
			sk.Signature = sign(s, sk.Message("heart", r, agg, manifest), d.HasArg("badsig"))
			step(SketchIn{Round: r, Aggregate: agg, Sketch: sk})
		}
	case "bound":
		// bound a b: holders a and b send projection shares for every
		// contribution (skip=c leaves c's out; extra=z adds one for z).
		for _, s := range sites(d) {
			sh := map[string][]uint64{}
			for site := range e.m.r.updates {
				if site != arg(d, "skip", "") {
					sh[site] = []uint64{1, 2}
				}
			}
			if z := arg(d, "extra", ""); z != "" {
				sh[z] = []uint64{1, 2}
			}
			step(BoundIn{From: s, Round: roundArg(), Shares: sh})
		}
	case "projected":
		// projected a=0.5 b=30 ...: the opened projections (err=msg fails).
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		proj := map[string]float64{}
		for _, a := range d.CmdArgs {
			if v, perr := strconv.ParseFloat(strings.Join(a.Vals, ","), 64); perr == nil && a.Key != "round" {
				proj[a.Key] = v
			}
		}
		step(Projected{Round: roundArg(), Projections: proj, Err: err})
	case "combined":
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		n := strconv.Itoa(int(e.m.round))
		step(Combined{Round: roundArg(), Output: obj(e, arg(d, "out", "m"+n)), Optimizer: obj(e, arg(d, "opt", "o"+n)), Err: err})
	case "countersign":
		for _, s := range sites(d) {
			out := e.m.r.output.Hash
			if o := arg(d, "out", ""); o != "" {
				out = e.hash(o)
			}
			step(CountersignIn{From: identity(s), Round: roundArg(), Output: out, Signature: sign(s, audit.CountersignMessage(s, e.m.outcome()), d.HasArg("badsig"))})
		}
	case "recorded":
		var err error
		if msg := arg(d, "err", ""); msg != "" {
			err = errors.New(msg)
		}
		step(Recorded{Err: err, Retry: d.HasArg("retry")})
	case "exclude", "readmit":
		// exclude d from=3 [by=admin] [reason=...]: the log holds an
		// admin's exclusion (readmission) of each site from round from.
		for _, s := range sites(d) {
			from, _ := strconv.ParseUint(arg(d, "from", "1"), 10, 64)
			step(ExclusionChanged{Exclusion: audit.Exclusion{Site: s, From: from, By: arg(d, "by", "admin"), Reason: arg(d, "reason", "test")},
				Excluded: d.Cmd == "exclude"})
		}
	case "eval":
		for _, s := range sites(d) {
			acc, _ := strconv.ParseFloat(arg(d, "acc", "0.75"), 64)
			step(EvalIn{Site: s, Model: e.m.parent.Hash, Test: model.Metrics{Accuracy: acc, N: 10}})
		}
	case "status":
		st := e.m.Status()
		fmt.Fprintf(&out, "phase=%s round=%d/%d connected=%v reported=%v completed=%d failed=%d model=%s\n", st.Phase, st.Round, st.Rounds,
			st.Connected, st.Reported, st.Completed, st.Failed, e.name(st.LatestModel))
		if st.WaitingFor != "" {
			fmt.Fprintf(&out, "waiting for: %s\n", st.WaitingFor)
		}
		if st.Failure != "" {
			fmt.Fprintf(&out, "failure: %s\n", st.Failure)
		}
		if len(st.Excluded) > 0 {
			fmt.Fprintf(&out, "last round left out: %v\n", st.Excluded)
		}
		for _, x := range st.Exclusions {
			fmt.Fprintf(&out, "excluded %s from round %d by %s: %s\n", x.Site, x.From, x.By, x.Reason)
		}
		for _, f := range st.Flags {
			fmt.Fprintf(&out, "last round flagged %s: %s\n", f.Site, f.Reason)
		}
		for _, s := range sortedKeys(st.FinalTest) {
			fmt.Fprintf(&out, "final %s: acc=%.2f\n", s, st.FinalTest[s].Accuracy)
		}
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	return out.String()
}

// print writes one line per action.
func (e *scriptEnv) print(w *strings.Builder, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case Send:
			fmt.Fprintf(w, "send %s: %s\n", a.To, e.message(a.Msg))
		case Store:
			fmt.Fprintf(w, "store %s\n", e.name(sha256.Sum256(a.Payload)))
		case ComputeCollectiveKey:
			fmt.Fprintf(w, "compute-collective-key %s\n", participants(a.Participants))
		case SaveKeySetup:
			fmt.Fprintf(w, "save-key-setup key=%s holders=%s\n", e.name(a.KeySetup.CollectiveKey), holders(a.KeySetup.Holders))
		case Aggregate:
			fmt.Fprintf(w, "aggregate round=%d updates=%s\n", a.Round, e.contributions(a.Updates))
		case Project:
			fmt.Fprintf(w, "project round=%d updates=%s active=%v holders=%s\n", a.Round, e.contributions(a.Updates), a.Active, strings.Join(slices.Sorted(maps.Keys(a.Shares)), ","))
		case Combine:
			var shares []string
			for _, h := range a.Shares {
				shares = append(shares, e.name(h))
			}
			fmt.Fprintf(w, "combine round=%d parent=%s optimizer=%s aggregate=%s shares=[%s] weight=%d\n", a.Round, e.name(a.Parent.Hash),
				e.name(a.OptimizerBefore.Hash), e.name(a.Aggregate.Hash), strings.Join(shares, " "), a.Weight)
		case Record:
			if a.KeySetup != nil {
				fmt.Fprintf(w, "record key-setup key=%s holders=%s\n", e.name(a.KeySetup.CollectiveKey), holders(a.KeySetup.Holders))
				continue
			}
			r := a.Round
			if r.Failed {
				fmt.Fprintf(w, "record round=%d FAILED parent=%s contributors=%v: %s\n", r.Round, e.name(r.Parent), r.Contributors, r.Reason)
				continue
			}
			var cs []string
			for _, c := range r.Countersignatures {
				cs = append(cs, c.Site)
			}
			var contribs []string
			for _, c := range r.Contributions {
				contribs = append(contribs, fmt.Sprintf("%s(%d)", c.Site, c.Samples))
			}
			fmt.Fprintf(w, "record round=%d parent=%s model=%s aggregate=%s optimizer=%s->%s contributions=%v decryptors=%v countersigners=%v certificates=%d\n",
				r.Round, e.name(r.Parent), e.name(r.Model), e.name(r.Aggregate), e.name(r.OptimizerBefore), e.name(r.OptimizerAfter), contribs,
				r.Decryptors, cs, len(r.Certificates))
			if len(r.Projections) > 0 {
				var ps []string
				for _, site := range slices.Sorted(maps.Keys(r.Projections)) {
					ps = append(ps, fmt.Sprintf("%s=%g", site, r.Projections[site]))
				}
				fmt.Fprintf(w, "  projections %s excluded=%v\n", strings.Join(ps, " "), r.Excluded)
			}
		case Log:
			fmt.Fprintf(w, "log %s %s%s\n", a.Level, a.Msg, e.attrs(a.Attrs))
		case Observe:
			if e.metrics {
				fmt.Fprintf(w, "observe %s %s %g\n", a.Metric, a.Label, a.Value)
			}
		case Done:
			if a.Err != nil {
				fmt.Fprintf(w, "done: error: %v\n", a.Err)
			} else {
				var rounds []string
				for _, r := range a.Result.Rounds {
					s := strconv.Itoa(r.Round)
					if r.Failed {
						s += "(failed)"
					}
					rounds = append(rounds, s)
				}
				fmt.Fprintf(w, "done: model=%s rounds=%v\n", e.name(a.Result.Model.Hash), rounds)
			}
			e.done = true
		default:
			fmt.Fprintf(w, "unknown action %T\n", a)
		}
	}
}

func (e *scriptEnv) message(msg any) string {
	switch m := msg.(type) {
	case TrainTask:
		return fmt.Sprintf("train round=%d parent=%s deadline=+%s", m.Round, e.name(m.Parent.Hash), m.Deadline.Sub(e.now))
	case KeySetupTask:
		return "key-setup " + participants(m.Participants)
	case PeerKeys:
		var s []string
		for _, k := range m.Keys {
			s = append(s, fmt.Sprintf("%s:%d", k.Site, k.Point))
		}
		return "peer-keys " + strings.Join(s, ",")
	case ShareBox:
		return fmt.Sprintf("share-box %d->%d", m.From, m.To)
	case BoundTask:
		return fmt.Sprintf("bound round=%d parent=%s contributions=%s active=%v deadline=+%s", m.Round, e.name(m.Parent.Hash), e.contributions(m.Contributions), m.Active, m.Deadline.Sub(e.now))
	case SketchTask:
		return fmt.Sprintf("sketch round=%d parent=%s aggregate=%s contributions=%s deadline=+%s", m.Round, e.name(m.Parent), e.name(m.Aggregate.Hash),
			e.contributions(m.Contributions), m.Deadline.Sub(e.now))
	case DecryptTask:
		var sketches []string
		for _, s := range m.Sketches {
			sketches = append(sketches, s.Site)
		}
		return fmt.Sprintf("decrypt round=%d parent=%s aggregate=%s active=%v contributions=%s sketches=%s", m.Round, e.name(m.Parent), e.name(m.Aggregate.Hash),
			m.Active, e.contributions(m.Contributions), strings.Join(sketches, ","))
	case CountersignTask:
		var shares []string
		for _, s := range m.Shares {
			shares = append(shares, s.Share.Site)
		}
		return fmt.Sprintf("countersign round=%d parent=%s aggregate=%s shares=%v optimizer=%s->%s model=%s", m.Round, e.name(m.Parent.Hash),
			e.name(m.Aggregate.Hash), shares, e.name(m.OptimizerBefore.Hash), e.name(m.OptimizerAfter.Hash), e.name(m.Output.Hash))
	case EvaluateTask:
		return fmt.Sprintf("evaluate model=%s", e.name(m.Model.Hash))
	case Finished:
		if m.Failure != "" {
			return fmt.Sprintf("finished rounds=%d failure=%q", m.Rounds, m.Failure)
		}
		return fmt.Sprintf("finished rounds=%d model=%s", m.Rounds, e.name(m.Model))
	}
	return fmt.Sprintf("%T", msg)
}

func (e *scriptEnv) contributions(cs []Contribution) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Site)
	}
	return strings.Join(s, ",")
}

func (e *scriptEnv) attrs(as []slog.Attr) string {
	var b strings.Builder
	for _, a := range as {
		v := a.Value.Any()
		switch x := v.(type) {
		case time.Duration:
			v = x.String()
		case []string:
			v = "[" + strings.Join(x, " ") + "]"
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, v)
	}
	return b.String()
}

func participants(ps []Participant) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s:%d", p.Site, p.Point))
	}
	return strings.Join(s, ",")
}

func holders(hs []audit.KeyHolder) string {
	var s []string
	for _, h := range hs {
		sig := ""
		if len(h.Signature) > 0 {
			sig = "+sig"
		}
		s = append(s, fmt.Sprintf("%s:%d%s", h.Site, h.Point, sig))
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

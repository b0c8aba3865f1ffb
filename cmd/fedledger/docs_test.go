package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/provision"
)

// Docs are code. TestDocs reads every fenced block of README.md and
// docs/*.md and handles each one, failing on any block it cannot handle
// unless the block is marked. Markers are HTML comments on the line before
// the fence (blank lines between are allowed):
//
//	<!-- not-run: REASON -->   skipped, and the reason logged
//	<!-- file: PATH -->        the block is a file of the walk-through, written to PATH
//	<!-- run: DIR -->          a sh block run for real, in DIR
//	<!-- output -->            lines the previous run block's last command prints
//	                           ("..." in a line matches anything)
//	<!-- fragment: KIND -->    a YAML fragment of a client, coordinator or
//	                           audit-node file, loaded merged into a kit's file
//	                           (its top-level sections replace the kit's; with
//	                           "KIND merged", merged key by key into them)
//
// Unmarked blocks:
//
//   - yaml: a configuration example, loaded by the real loader of its kind
//     (a consortium file, a coordinator, audit-node or client file), in a
//     kit of a freshly provisioned consortium, so the certificates it names
//     exist (a client or audit-node example goes into the kit of the
//     participant whose certificate it names);
//   - sh: every line is a `fedledger ...` command line, checked to parse
//     (the subcommand exists, every flag is one of its flags with a valid
//     value, the positional arguments fit), or `make TARGET` with a target
//     of the Makefile;
//   - ini: its ExecStart lines that run fedledger are checked to parse.
//
// The run, file and output blocks of a document become one testscript,
// run in order in a fresh directory: DEPLOYMENT.md's provisioning,
// study-signing and hospital commands really run. Inline code spans that
// start with "fedledger " are checked to parse too (their positional
// arguments only when they have some).
func TestDocs(t *testing.T) {
	docs, _ := filepath.Glob("../../docs/*.md")
	docs = append([]string{"../../README.md"}, docs...)
	kits := provisionDocsKits(t)
	targets := makeTargets(t)
	scripts := t.TempDir()
	for _, doc := range docs {
		name := strings.TrimSuffix(filepath.Base(doc), ".md")
		t.Run(name, func(t *testing.T) {
			md, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			s, errs := checkDoc(t, string(md), kits, targets)
			for _, err := range errs {
				t.Errorf("%s:%v", doc, err)
			}
			if s != nil && s.runs > 0 {
				if err := os.WriteFile(filepath.Join(scripts, name+".txtar"), []byte(s.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Run("walkthrough", func(t *testing.T) {
		testscript.Run(t, testscript.Params{Dir: scripts})
	})
}

// checkDoc handles every block and inline command of one document,
// returning its walk-through script and an error per problem, each
// starting with its line number.
func checkDoc(t *testing.T, md, kits string, targets map[string]bool) (*docScript, []error) {
	blocks, inline, err := parseMarkdown(md)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	s := &docScript{}
	for i, b := range blocks {
		if err := handleBlock(t, b, i, s, kits, targets); err != nil {
			errs = append(errs, fmt.Errorf("%d: %v", b.line, err))
		}
	}
	for _, span := range inline {
		if err := checkCommandLine(span.text, true); err != nil {
			errs = append(errs, fmt.Errorf("%d: `%s`: %v", span.line, span.text, err))
		}
	}
	return s, errs
}

// TestDocsCheckerRejects: the docs test fails on what it must not let
// through.
func TestDocsCheckerRejects(t *testing.T) {
	kits := provisionDocsKits(t)
	targets := makeTargets(t)
	fence := "```"
	for name, tc := range map[string]struct{ md, want string }{
		"unmarked text block":   {fence + "\nsome output\n" + fence + "\n", `a "" block the docs test does not run`},
		"not-run without why":   {"<!-- not-run: -->\n" + fence + "\nx\n" + fence + "\n", "needs a reason"},
		"misspelt subcommand":   {fence + "sh\nfedledger client initt --csv x.csv\n" + fence + "\n", `unknown command "initt"`},
		"unknown flag":          {fence + "sh\nfedledger client init --label x --labels y\n" + fence + "\n", "unknown flag: --labels"},
		"bad flag value":        {fence + "sh\nfedledger study sign --valid-for forever\n" + fence + "\n", `invalid argument "forever"`},
		"too many arguments":    {fence + "sh\nfedledger provision a.yaml b.yaml\n" + fence + "\n", "accepts 1 arg(s), received 2"},
		"other command":         {fence + "sh\ncurl http://x\n" + fence + "\n", "neither a fedledger nor a make command"},
		"unknown make target":   {fence + "sh\nmake deploy\n" + fence + "\n", "make deploy: no such target"},
		"inline typo":           {"run `fedledger verfy MODEL` later\n", `unknown command "verfy"`},
		"misplaced key":         {fence + "yaml\ncoordinator: fl.example.org:7443\ntls: {cert: cleveland.pem, key: cleveland-key.pem, ca: ca.pem}\ndata: {heart: va}\npolicy:\n  studies: [x]\n" + fence + "\n", "policy"},
		"unknown participant":   {fence + "yaml\ncoordinator: fl.example.org:7443\ntls: {cert: mayo.pem, key: mayo-key.pem, ca: ca.pem}\ndata: {heart: va}\n" + fence + "\n", "mayo.pem"},
		"bad fragment":          {"<!-- fragment: client -->\n" + fence + "yaml\ndata:\n  csv: {path: x.csv, label_column: y, numeric: [all, a]}\n" + fence + "\n", `numeric: "all" must be alone`},
		"long-running run":      {"<!-- run: . -->\n" + fence + "sh\nfedledger coordinator --config c.yaml\n" + fence + "\n", "runs until stopped"},
		"output without run":    {"<!-- output -->\n" + fence + "text\nx\n" + fence + "\n", "must follow a run block"},
		"marker not before one": {"<!-- not-run: x -->\ntext\n" + fence + "\nx\n" + fence + "\n", "is not right before a code block"},
		"unknown marker":        {"<!-- skip -->\n" + fence + "\nx\n" + fence + "\n", "unknown marker"},
	} {
		t.Run(name, func(t *testing.T) {
			_, errs := checkDoc(t, tc.md, kits, targets)
			if len(errs) == 0 || !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Fatalf("errors %v, want one containing %q", errs, tc.want)
			}
		})
	}
}

// TestKitReadmeCommandsParse: the commands that provisioning writes into
// admin and observer kits' README.txt are real commands with real flags.
func TestKitReadmeCommandsParse(t *testing.T) {
	kits := provisionDocsKits(t)
	for _, id := range []string{"consortium-admin", "regulator"} {
		b, err := os.ReadFile(filepath.Join(kits, id, "README.txt"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
			i := strings.Index(l, "fedledger ")
			if i < 0 {
				continue
			}
			n++
			if err := checkCommandLine(l[i:], false); err != nil {
				t.Errorf("%s README.txt: %s: %v", id, strings.TrimSpace(l[i:]), err)
			}
		}
		if n < 2 {
			t.Errorf("%s README.txt: %d commands", id, n)
		}
	}
}

// TestDeploymentDescribesEveryDataOption: DEPLOYMENT.md explains every
// data.csv key of the file schema.
func TestDeploymentDescribesEveryDataOption(t *testing.T) {
	md, err := os.ReadFile("../../docs/DEPLOYMENT.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range csvKeys() {
		if !strings.Contains(string(md), "| `"+key+"` |") {
			t.Errorf("docs/DEPLOYMENT.md has no row for data.csv key `%s` in its data options table", key)
		}
	}
}

type mdBlock struct {
	line        int    // of the opening fence
	lang        string // info string
	text        string
	marker, arg string // from <!-- marker: arg -->
	markerLine  int
}

type mdSpan struct {
	line int
	text string
}

var (
	markerRe = regexp.MustCompile(`^<!--\s*([a-z-]+)\s*(?::\s*(.*?))?\s*-->$`)
	inlineRe = regexp.MustCompile("`(fedledger [^`]+)`")
)

// parseMarkdown returns the fenced blocks of md, each with the marker
// comment before it, and the inline `fedledger ...` spans outside blocks.
func parseMarkdown(md string) ([]mdBlock, []mdSpan, error) {
	lines := strings.Split(md, "\n")
	var blocks []mdBlock
	var prose strings.Builder
	proseLine := []int{} // line number of each prose line, for spans
	var pending *mdBlock // marker waiting for its block
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if m := markerRe.FindStringSubmatch(l); m != nil {
			if pending != nil {
				return nil, nil, fmt.Errorf("line %d: marker <!-- %s --> has no block after it", pending.markerLine, pending.marker)
			}
			pending = &mdBlock{marker: m[1], arg: m[2], markerLine: i + 1}
			continue
		}
		if fence, ok := strings.CutPrefix(l, "```"); ok {
			b := mdBlock{line: i + 1, lang: strings.TrimSpace(fence)}
			if pending != nil {
				b.marker, b.arg, b.markerLine = pending.marker, pending.arg, pending.markerLine
				pending = nil
			}
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				return nil, nil, fmt.Errorf("line %d: unclosed code block", b.line)
			}
			b.text = strings.Join(body, "\n") + "\n"
			blocks = append(blocks, b)
			continue
		}
		if l != "" && pending != nil {
			return nil, nil, fmt.Errorf("line %d: marker <!-- %s --> is not right before a code block", pending.markerLine, pending.marker)
		}
		prose.WriteString(lines[i] + "\n")
		proseLine = append(proseLine, i+1)
	}
	if pending != nil {
		return nil, nil, fmt.Errorf("line %d: marker <!-- %s --> has no block after it", pending.markerLine, pending.marker)
	}
	text := prose.String()
	var spans []mdSpan
	for _, m := range inlineRe.FindAllStringSubmatchIndex(text, -1) {
		line := proseLine[strings.Count(text[:m[0]], "\n")]
		spans = append(spans, mdSpan{line, strings.Join(strings.Fields(text[m[2]:m[3]]), " ")})
	}
	return blocks, spans, nil
}

// docScript accumulates a document's walk-through as a testscript.
type docScript struct {
	script, files strings.Builder
	runs          int
	lastWasRun    bool
}

func (s *docScript) String() string { return s.script.String() + s.files.String() }

func handleBlock(t *testing.T, b mdBlock, i int, s *docScript, kits string, targets map[string]bool) error {
	wasRun := s.lastWasRun
	s.lastWasRun = false
	switch b.marker {
	case "not-run":
		if strings.TrimSpace(b.arg) == "" {
			return fmt.Errorf("<!-- not-run --> needs a reason")
		}
		t.Logf("line %d: not run (%s)", b.line, b.arg)
		return nil
	case "file":
		if b.arg == "" || filepath.IsAbs(b.arg) || strings.Contains(b.arg, "..") {
			return fmt.Errorf("<!-- file: %s -->: want a relative path", b.arg)
		}
		archived := fmt.Sprintf("doc/%d/%s", i, filepath.Base(b.arg))
		if dir := filepath.Dir(b.arg); dir != "." {
			fmt.Fprintf(&s.script, "mkdir $WORK/%s\n", dir)
		}
		fmt.Fprintf(&s.script, "cp $WORK/%s $WORK/%s\n", archived, b.arg)
		fmt.Fprintf(&s.files, "-- %s --\n%s", archived, b.text)
		if b.lang == "yaml" {
			return checkYAML(t, b, kits)
		}
		return nil
	case "run":
		if b.lang != "sh" {
			return fmt.Errorf("<!-- run --> on a %q block, want sh", b.lang)
		}
		cmds, err := shellCommands(b.text)
		if err != nil {
			return err
		}
		fmt.Fprintf(&s.script, "\n# line %d\ncd $WORK/%s\n", b.line, b.arg)
		for _, args := range cmds {
			if args[0] != "fedledger" {
				return fmt.Errorf("run block: %q is not a fedledger command", strings.Join(args, " "))
			}
			if err := checkCommandLine(shellJoin(args), false); err != nil {
				return err
			}
			if why := longRunning(args[1:]); why != "" {
				return fmt.Errorf("run block: %s %s; check it for flags only (no marker)", strings.Join(args, " "), why)
			}
			fmt.Fprintf(&s.script, "exec %s\n", scriptArgs(args))
		}
		s.runs++
		s.lastWasRun = true
		return nil
	case "output":
		if !wasRun {
			return fmt.Errorf("<!-- output --> must follow a run block")
		}
		for _, l := range strings.Split(strings.TrimRight(b.text, "\n"), "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			re := strings.ReplaceAll(regexp.QuoteMeta(l), `\.\.\.`, `.*`)
			fmt.Fprintf(&s.script, "stdout %s\n", scriptQuote("^"+re+"$"))
		}
		return nil
	case "fragment":
		if b.lang != "yaml" {
			return fmt.Errorf("<!-- fragment --> on a %q block, want yaml", b.lang)
		}
		return checkYAML(t, b, kits)
	case "":
	default:
		return fmt.Errorf("unknown marker <!-- %s -->", b.marker)
	}
	switch b.lang {
	case "yaml":
		return checkYAML(t, b, kits)
	case "sh":
		cmds, err := shellCommands(b.text)
		if err != nil {
			return err
		}
		for _, args := range cmds {
			switch args[0] {
			case "fedledger":
				if err := checkCommandLine(shellJoin(args), false); err != nil {
					return fmt.Errorf("%s: %v", shellJoin(args), err)
				}
			case "make":
				for _, target := range args[1:] {
					if !targets[target] {
						return fmt.Errorf("make %s: no such target in the Makefile", target)
					}
				}
			default:
				return fmt.Errorf("%q is neither a fedledger nor a make command; mark the block <!-- not-run: why -->", strings.Join(args, " "))
			}
		}
		return nil
	case "ini":
		found := false
		for _, l := range strings.Split(b.text, "\n") {
			v, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecStart=")
			if !ok {
				continue
			}
			f := strings.Fields(v)
			if len(f) == 0 || filepath.Base(f[0]) != "fedledger" {
				continue
			}
			found = true
			if err := checkCommandLine("fedledger "+strings.Join(f[1:], " "), false); err != nil {
				return fmt.Errorf("ExecStart: %v", err)
			}
		}
		if !found {
			return fmt.Errorf("ini block without an ExecStart that runs fedledger; mark it <!-- not-run: why -->")
		}
		return nil
	}
	return fmt.Errorf("a %q block the docs test does not run; mark it <!-- not-run: why --> or make it one of yaml, sh, ini", b.lang)
}

// shellCommands splits a sh block into command lines (continuations
// joined, comments dropped) and each line into words.
func shellCommands(text string) ([][]string, error) {
	var out [][]string
	joined := strings.ReplaceAll(text, "\\\n", " ")
	for _, l := range strings.Split(joined, "\n") {
		words, err := shellWords(l)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", l, err)
		}
		if len(words) > 0 {
			out = append(out, words)
		}
	}
	return out, nil
}

// shellWords splits a line like a POSIX shell would for the plain cases
// docs use: single and double quotes, # comments.
func shellWords(l string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(l[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unclosed quote")
			}
			cur.WriteString(l[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '#' && !inWord:
			i = len(l)
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// shellJoin joins words back into a line shellWords splits the same way,
// quoting the words that hold a space.
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		if strings.ContainsAny(w, " \t") && !strings.Contains(w, `"`) {
			w = `"` + w + `"`
		}
		q[i] = w
	}
	return strings.Join(q, " ")
}

// checkCommandLine checks that line (starting with "fedledger") names a
// real subcommand and uses only its flags, with values they accept. Square
// brackets (optional parts) are dropped, and "..." words ignored. Unless
// inline, the positional arguments must fit the command; inline mentions
// are checked for them only when they have some.
func checkCommandLine(line string, inline bool) error {
	words, err := shellWords(line)
	if err != nil {
		return err
	}
	var args []string
	for _, w := range words[1:] {
		w = strings.Trim(w, "[]")
		if w != "" && w != "..." {
			args = append(args, w)
		}
	}
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if cmd == root {
		return fmt.Errorf("no subcommand")
	}
	if err := cmd.ParseFlags(rest); errors.Is(err, pflag.ErrHelp) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%s: %v", cmd.CommandPath(), err)
	}
	pos := cmd.Flags().Args()
	if inline && len(pos) == 0 {
		return nil
	}
	if err := cmd.ValidateArgs(pos); err != nil {
		return fmt.Errorf("%s: %v", cmd.CommandPath(), err)
	}
	if !cmd.Runnable() {
		return fmt.Errorf("%s is not a command by itself (subcommands: %s)", cmd.CommandPath(), subcommands(cmd))
	}
	return nil
}

func subcommands(c *cobra.Command) string {
	var names []string
	for _, s := range c.Commands() {
		names = append(names, s.Name())
	}
	return strings.Join(names, ", ")
}

// longRunning says why a command cannot run in a docs walk-through (it
// serves until stopped, or needs the network), or "".
func longRunning(args []string) string {
	sub := strings.Join(args[:min(2, len(args))], " ")
	hasFlag := func(f string) bool {
		for _, a := range args {
			if a == f || strings.HasPrefix(a, f+"=") {
				return true
			}
		}
		return false
	}
	switch {
	case sub == "client init":
		return ""
	case args[0] == "client" && hasFlag("--check"):
		return ""
	case args[0] == "coordinator", args[0] == "client", args[0] == "audit-node", args[0] == "demo":
		return "runs until stopped"
	case args[0] == "study" && sub != "study sign":
		return "needs the audit log or the coordinator"
	case args[0] == "verify" && hasFlag("--audit"):
		return "needs the audit log"
	}
	return ""
}

// scriptArgs renders words as a testscript command line.
func scriptArgs(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = scriptQuote(w)
	}
	return strings.Join(q, " ")
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:,=@+-]+$`)

func scriptQuote(w string) string {
	if plainWord.MatchString(w) {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", "''") + "'"
}

// provisionDocsKits provisions a consortium with the ids the docs use and
// returns its kits directory.
func provisionDocsKits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "consortium.yaml")
	err := os.WriteFile(path, []byte(`name: docs-consortium
coordinator: {id: coordinator, address: fl.example.org:7443}
audit_nodes:
  - {id: audit-1, address: audit.member-a.org:7600}
  - {id: audit-2, address: audit.member-b.org:7600}
  - {id: audit-3, address: audit.member-c.org:7600}
hospitals: [{id: cleveland}, {id: hungary}, {id: switzerland}, {id: va}]
admins: [consortium-admin]
observers: [regulator]
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c, err := provision.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := provision.Run(c, provision.Options{Out: dir})
	if err != nil {
		t.Fatal(err)
	}
	return res.KitsDir
}

func makeTargets(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z0-9_.-]+):`).FindAllStringSubmatch(string(b), -1) {
		targets[m[1]] = true
	}
	return targets
}

var (
	topKeyRe = regexp.MustCompile(`(?m)^([a-z_]+):`)
	certRe   = regexp.MustCompile(`cert:\s*([A-Za-z0-9_.-]+)\.pem`)
)

// checkYAML loads a YAML block with the real loader of its kind, from a
// file in a kit directory so that the certificates it names exist.
func checkYAML(t *testing.T, b mdBlock, kits string) error {
	keys := map[string]bool{}
	for _, m := range topKeyRe.FindAllStringSubmatch(b.text, -1) {
		keys[m[1]] = true
	}
	kind, mode, _ := strings.Cut(b.arg, " ")
	if mode != "" && mode != "merged" {
		return fmt.Errorf("<!-- fragment: %s -->: want KIND or KIND merged", b.arg)
	}
	if b.marker != "fragment" {
		switch {
		case keys["hospitals"]:
			kind = "consortium"
		case keys["study"]:
			kind = "coordinator"
		case keys["advertise"] || keys["bootstrap"] || keys["join"] || keys["origin"]:
			kind = "audit-node"
		case keys["data"] || keys["coordinator"]:
			kind = "client"
		default:
			return fmt.Errorf("a YAML block the docs test cannot tell the kind of (keys %v); mark it", keys)
		}
	}
	t.Logf("line %d: a %s file, loaded by its loader", b.line, kind)
	kit, base := map[string]string{"client": "cleveland", "coordinator": "coordinator", "audit-node": "audit-1"}[kind], ""
	switch kind {
	case "consortium":
		dir, err := os.MkdirTemp("", "docs-consortium-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		p := filepath.Join(dir, "consortium.yaml")
		if err := os.WriteFile(p, []byte(b.text), 0o600); err != nil {
			return err
		}
		c, err := provision.Load(p)
		if err != nil {
			return err
		}
		_, err = provision.Run(c, provision.Options{Out: dir})
		return err
	case "client":
		base = "client.yaml"
	case "coordinator":
		base = "coordinator.yaml"
	case "audit-node":
		base = "audit.yaml"
	default:
		return fmt.Errorf("unknown configuration kind %q (want client, coordinator or audit-node)", kind)
	}
	text := b.text
	if m := certRe.FindStringSubmatch(text); m != nil {
		if _, err := os.Stat(filepath.Join(kits, m[1])); err != nil {
			return fmt.Errorf("names certificate %s.pem, which is not a participant of the docs' consortium", m[1])
		}
		kit = m[1]
	}
	if b.marker == "fragment" {
		full, err := os.ReadFile(filepath.Join(kits, kit, base))
		if err != nil {
			return err
		}
		if mode == "merged" {
			var into, frag map[string]any
			if err := yaml.Unmarshal(full, &into); err != nil {
				return err
			}
			if err := yaml.Unmarshal([]byte(b.text), &frag); err != nil {
				return err
			}
			merged, err := yaml.Marshal(mergeYAML(into, frag))
			if err != nil {
				return err
			}
			text = string(merged)
		} else {
			text = string(full)
			for k := range keys {
				text = config.ReplaceSection(text, k, "")
			}
			text += b.text
		}
	}
	p := filepath.Join(kits, kit, fmt.Sprintf("doc-%d.yaml", b.line))
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		return err
	}
	defer os.Remove(p)
	var err error
	switch kind {
	case "client":
		_, err = config.LoadClient(p, nil)
	case "coordinator":
		_, err = config.LoadCoordinator(p, nil)
	case "audit-node":
		_, err = config.LoadAuditNode(p, nil)
	}
	return err
}

// mergeYAML merges frag into into key by key: maps merge, any other value
// replaces.
func mergeYAML(into, frag map[string]any) map[string]any {
	for k, v := range frag {
		sub, ok1 := v.(map[string]any)
		base, ok2 := into[k].(map[string]any)
		if ok1 && ok2 {
			into[k] = mergeYAML(base, sub)
			continue
		}
		into[k] = v
	}
	return into
}

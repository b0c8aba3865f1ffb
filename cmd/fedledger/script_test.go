package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	// RunMain exits the process itself: the binary the process tests built
	// is removed when the tests have run, inside it.
	os.Exit(testscript.RunMain(cleanup{m}, map[string]func() int{"fedledger": runMain}))
}

type cleanup struct{ m *testing.M }

func (c cleanup) Run() int {
	code := c.m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	return code
}

// TestScripts runs the CLI scripts in testdata/script: what an operator
// types and reads, error messages and exit statuses included.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// corrupt FILE OFFSET flips one bit of FILE at byte OFFSET
			// counted from the end.
			"corrupt": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: corrupt FILE OFFSET_FROM_END")
				}
				path := ts.MkAbs(args[0])
				b, err := os.ReadFile(path)
				ts.Check(err)
				var off int
				for _, c := range args[1] {
					off = off*10 + int(c-'0')
				}
				b[len(b)-off] ^= 1
				ts.Check(os.WriteFile(path, b, 0o644))
			},
		},
	})
}

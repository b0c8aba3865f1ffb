// Package heart ships the processed UCI Heart Disease files of four
// hospitals inside the binary, so the demo and tests need no download.
//
// Janosi A, Steinbrunn W, Pfisterer M, Detrano R. Heart Disease. UCI Machine
// Learning Repository, 1988. doi:10.24432/C52P4X. Licensed CC BY 4.0; see
// README.md in this directory, which ships with the data.
//
// This package only holds the bytes; client/train parses and preprocesses
// them.
package heart

import (
	"embed"
	"fmt"
)

//go:embed processed.*.data README.md
var FS embed.FS

// Files maps each hospital id to its file in FS.
var Files = map[string]string{
	"cleveland":   "processed.cleveland.data",
	"hungary":     "processed.hungarian.data",
	"switzerland": "processed.switzerland.data",
	"va":          "processed.va.data",
}

// File returns the raw bytes of a hospital's file.
func File(hospital string) ([]byte, error) {
	name, ok := Files[hospital]
	if !ok {
		return nil, fmt.Errorf("heart: unknown hospital %q (want cleveland, hungary, switzerland or va)", hospital)
	}
	return FS.ReadFile(name)
}

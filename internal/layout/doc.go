// Package layout holds no code: its test keeps the project's shape, the
// import rules docs/DESIGN.md ("Packages") states, so a change that breaks
// one fails `make test` instead of eroding the design quietly.
package layout

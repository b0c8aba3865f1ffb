// Package config turns configuration files, FEDLEDGER_* environment
// variables and command-line flags into the typed configurations of the
// coordinator and client packages. It is the only package besides cmd/ that
// imports viper.
//
// # Precedence
//
// Highest first: command-line flags, then environment variables, then the
// YAML file, then built-in defaults. An environment variable is the key's
// path in upper case with dots as underscores under the FEDLEDGER_ prefix:
// study.min_clients is FEDLEDGER_STUDY_MIN_CLIENTS.
//
// Relative paths in a file (certificates, data files, the data directory)
// are resolved against the directory holding that file, so a provisioning
// kit can be moved as a whole. Unknown keys are an error: a misspelt
// "min_client" must not silently fall back to a default.
//
// Loading stops at the first problem with an error naming the key or file at
// fault; it never half-applies a configuration.
package config

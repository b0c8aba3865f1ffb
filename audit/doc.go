// Package audit is fedledger's provenance log core, pure and offline: the
// record schema and its canonical binary encoding (record.go), the
// Ed25519-signed envelope whose exact bytes are the Merkle leaf
// (envelope.go), the RFC 6962 Merkle log on golang.org/x/mod/sumdb/tlog
// (merkle.go), the deterministic validation rules every replica and every
// verifier applies (the consortium's "smart contract": signer roles, study
// rules, round sequence, parent hashes, idempotency; rules.go), C2SP
// tlog-checkpoints signed with golang.org/x/mod/sumdb/note and a witness
// that cosigns only consistent extensions (checkpoint.go), and offline
// bundles with a verifier that replays every entry and walks a model back
// to its study's initial model (bundle.go, report.go, trust.go).
//
// Identities and their CA are internal/tlsutil's; records are signed with
// the same Ed25519 key as the participant's mTLS certificate (CN = id,
// OU = role). Certificate validity is checked at the record's own
// timestamp, never the wall clock, so every replica decides identically.
//
// # What it does not own
//
// It imports neither gRPC nor Raft (an import-rule test keeps it so): the
// replicated node, its bbolt stores, the mTLS transport, the AuditLog gRPC
// service and its client are package [github.com/fedledger/fedledger/audit/cluster].
// CLI commands and configuration loading are cmd/fedledger's.
package audit

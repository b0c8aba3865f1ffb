// Package audit owns fedledger's provenance log core: the record schema and
// its canonical binary encoding (record.go), the Ed25519-signed envelope
// whose exact bytes are the Merkle leaf (envelope.go), the RFC 6962 Merkle
// log built on golang.org/x/mod/sumdb/tlog (merkle.go), the deterministic
// validation rules (the "smart contract": signer role, study rules, round
// sequence, parent hashes, idempotency; rules.go), a raft.FSM over them
// with snapshot/restore (fsm.go), C2SP tlog-checkpoints signed with
// golang.org/x/mod/sumdb/note and a witness that cosigns only consistent
// extensions (checkpoint.go), and offline bundles with a verifier that
// replays every entry and walks a model back to its study's initial model
// (bundle.go).
//
// Identities and their CA are internal/tlsutil's; records are signed with
// the same Ed25519 key as the participant's mTLS certificate (CN = id,
// OU = role). Certificate validity is checked at the record's own
// timestamp, never the wall clock, so every replica decides identically.
//
// It does not own (yet) the networked Raft node (bbolt stores, mTLS stream
// layer, leader handling), the gRPC AuditLog service, CLI commands or
// configuration loading. The Raft node must use hashicorp/raft v1.7.3:
// v1.8 cannot build with raft-boltdb/v2 here because go-metrics v0.7
// dropped the compat package.
package audit

// Package audit is fedledger's provenance log core, pure and offline: the
// record schema and its canonical binary encoding (record.go), the
// Ed25519-signed envelope whose exact bytes are the Merkle leaf
// (envelope.go), the RFC 6962 Merkle log on golang.org/x/mod/sumdb/tlog
// (merkle.go), the deterministic validation rules every replica and every
// verifier applies (the consortium's "smart contract", rules.go), C2SP
// tlog-checkpoints signed with golang.org/x/mod/sumdb/note and a witness
// that cosigns only consistent extensions (checkpoint.go), and offline
// bundles with a verifier that replays every entry and walks a model back
// to its study's initial model (bundle.go, report.go, trust.go).
//
// # The rules
//
// A record is accepted only when those it speaks for have signed it: the
// submitter's role (an admin creates studies, the coordinator submits the
// rest), and inside the record the hospitals' own signatures over the
// messages of statements.go. A study-created record fixes the rules (sites,
// K, t, number of rounds, HE parameters); a key setup is signed by every
// key holder and binds their certificates to the study; a completed round
// needs K signed contributions, and either t decryption shares and t
// countersignatures from key holders (secure) or K countersignatures with
// the signers' certificates (plaintext), its HE parameters and collective
// key equal to the study's, its round within the limit, its parent and
// optimizer state chained to the previous round; a failed round moves
// nothing. Each violation has its own sentinel error inside a [RuleError].
// Check and Apply run the same pure check; VerifyBundle replays it.
//
// Identities and their CA are internal/tlsutil's; records are signed with
// the same Ed25519 key as the participant's mTLS certificate (CN = id,
// OU = role). Certificate validity is checked at the record's own
// timestamp, never the wall clock, so every replica decides identically.
//
// # What it does not own
//
// It imports neither gRPC nor Raft (imports_test.go keeps it so; gRPC's
// peer and credentials packages come in only through internal/tlsutil): the
// replicated node, its bbolt stores, the mTLS transport, the AuditLog gRPC
// service and its client are package [github.com/fedledger/fedledger/audit/cluster].
// CLI commands and configuration loading are cmd/fedledger's.
package audit

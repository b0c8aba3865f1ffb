// Package cluster is the networked audit-log replica: a hashicorp/raft
// member whose FSM is the [audit.Ledger] (fsm.go), with the log and stable
// store in one bbolt file fsynced on every write, file snapshots, one
// mutual-TLS port shared by Raft and gRPC and routed by ALPN
// (transport.go), the AuditLog gRPC service (service.go), checkpoint
// signing and witnessing across the voters (node.go, witness.go), and the
// client other processes use to reach any node (client.go).
//
// # Writes
//
// The leader checks a record with [audit.Ledger.Check] before proposing
// it, so a record the rules refuse never enters any Raft log; the FSM
// still re-checks on apply (two appends racing for the same round both
// pass the first check). A proposed record travels framed: a version byte,
// its SHA-256, the record (integrity.go).
//
// # Integrity
//
// A node never runs on stored state it has not verified. Every log entry
// and stable value is sealed with a SHA-256 when stored and verified when
// read; every snapshot's state.bin carries a CRC (hashicorp's) and a
// header binding its meta.json. At start, before Raft reads anything,
// [StartNode] checks raft.db (bbolt's meta pages and page tree, every
// entry from the first index to the last, the stable values), every
// snapshot, and the tree rebuilt from the newest snapshot and the log
// against the checkpoint the node last cosigned (witness.json), then
// replaces raft.db with a file rebuilt from the verified content (scan.go,
// boltpages.go).
//
// On damage the node logs each failure at error level (check, raft index,
// leaf index when known), counts it in
// fedledger_audit_corruption_detected_total{check}, moves raft.db and
// snapshots/ into data_dir/evidence/<UTC time>/ beside a report.json
// (nothing is deleted), keeps its current term and last vote, and starts
// with an empty log (recover.go). Until it has applied an index the
// leader gives it (at or past every committed entry) and its tree matches
// both its witness memory and the leader's, it refuses every vote and
// pre-vote request and sends none (an empty log would otherwise grant any
// vote, and a member that lost acknowledged entries could help elect a
// leader without them), and refuses reads of its own replica
// (Unavailable). A node that is its configuration's only voter refuses to
// start instead, leaving its files in place. A witness.json that does not
// verify is a start-up error naming it, never a reset.
//
// Damage found while running (a bad frame at apply, an entry whose seal
// fails when Raft reads it) halts the node rather than skip the entry:
// Raft stops, reads are refused, [Node.Done] is closed and [Node.Err] says
// what; the process should exit and be restarted, and the restart
// recovers. [Node.State] and fedledger_audit_replica_state name the
// state: healthy, recovering, halted, inconsistent.
//
// Residual risk: if the damaged store's current term or vote cannot be
// read, the node restarts without them. The vote guard keeps it out of
// elections until it has caught up, which closes the usual window for a
// double vote, but not an election in a term above the leader's that was
// running across the restart.
//
// # Errors
//
// The [Client] returns the audit package's sentinel errors, not gRPC
// status codes, so callers test them with errors.Is: [ErrNoLeader] means
// no leader with a quorum answered (retry; appends are idempotent),
// [audit.ErrConflict] that a different record already holds that study,
// round and kind, [audit.ErrUnknownStudy] that the log has no such study.
// A node's damaged state is [ErrCorrupt] (a *[CorruptionError]).
// [Node.JoinCluster] gives up after NodeConfig.JoinTimeout with an error
// naming the address and the last error.
//
// # What it does not own
//
// The record schema, rules and verification are package audit's; this
// package only replicates and serves them. It must use hashicorp/raft
// v1.7.3: v1.8 cannot build with raft-boltdb/v2 because go-metrics v0.7
// dropped the compat package. Stores written before the integrity formats
// (unsealed entries, unframed commands, a plain witness.json) are reported
// as corrupt; there is no in-place upgrade.
package cluster

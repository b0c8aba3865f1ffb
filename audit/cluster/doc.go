// Package cluster is the networked audit-log replica: a hashicorp/raft
// member whose FSM is the [audit.Ledger] (fsm.go), with the log and stable
// store in one bbolt file fsynced on every write, file snapshots, one
// mutual-TLS port shared by Raft and gRPC and routed by ALPN
// (transport.go), the AuditLog gRPC service (service.go), checkpoint
// signing and witnessing across the voters (node.go, witness.go), and the
// client other processes use to reach any node (client.go).
//
// # Errors
//
// The [Client] returns the audit package's sentinel errors, not gRPC
// status codes, so callers test them with errors.Is: [ErrNoLeader] means
// no leader with a quorum answered (retry; appends are idempotent),
// [audit.ErrConflict] that a different record already holds that study,
// round and kind, [audit.ErrUnknownStudy] that the log has no such study.
//
// # What it does not own
//
// The record schema, rules and verification are package audit's; this
// package only replicates and serves them. It must use hashicorp/raft
// v1.7.3: v1.8 cannot build with raft-boltdb/v2 because go-metrics v0.7
// dropped the compat package.
package cluster

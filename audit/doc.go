// Package audit will own fedledger's provenance log: the schema of signed
// study and round records, the RFC 6962 Merkle log they are leaves of, the
// Raft FSM that validates every record identically on every audit node
// (signer and role, study rules, round sequence and parent hashes), signed
// and cosigned checkpoints, and the offline verifier a regulator runs on a
// model file. See docs/DESIGN.md, "The audit log".
//
// It is empty in this version: the coordinator records nothing yet, and
// rounds count as done when the coordinator has stored their model. The
// seam is the coordinator's round loop (coordinator.driver.aggregate),
// where a round will become done only once the log has committed it.
package audit

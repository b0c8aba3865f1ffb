// Package study is the coordinator's protocol: one study, from waiting for
// the hospitals through key setup and every round (collect → aggregate →
// decrypt → combine → countersign → record) to the final evaluation, as a
// pure, deterministic state machine.
//
// # Shape
//
// A [Machine] takes an [Event] with the time it happened ([Machine.Step])
// and returns the [Action]s the coordinator must take: messages to send,
// work to do (add ciphertexts, combine decryption shares, save the key
// setup, append a record to the audit log), log lines and metrics. It does
// no I/O, owns no goroutine, reads no clock and imports no gRPC, protobuf,
// Lattigo or disk code (an import-rule test keeps it so), so every corner
// of the protocol is tested by scripts (testdata/*.txt) that read like the
// protocol's story. The coordinator's driver is one goroutine that feeds
// it events from the gRPC handlers and its own workers and performs its
// actions; the result of a work action comes back as an event.
//
// Resuming after a crash is not a second code path: [New] takes a [Start],
// where the study stands on the audit log (and what the coordinator kept
// on disk), and the machine begins from there.
//
// # What it decides, and what it trusts
//
// It decides who takes part (the approved sites, then the key holders),
// when a phase is over (everyone answered, or a deadline with enough),
// which key holders decrypt and countersign, and what goes on the record.
// It checks every hospital signature it will put on a record (contribution,
// key setup confirmation, decryption share, countersignature) against the
// hospital's key (bound at key setup in a secure study), so the
// coordinator never submits a record the log's rules would refuse. It
// trusts the driver for what only crypto can check (that a payload opens
// as ciphertexts of the study's key, that shares combine) and for the
// results of its work actions.
package study

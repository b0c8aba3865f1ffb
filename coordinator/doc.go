// Package coordinator runs a study: it serves the Federation gRPC API to
// hospital clients (mutual TLS only), drives the rounds, aggregates the
// updates and keeps every global model in a content-addressed store.
//
// # Shape
//
// The round protocol is a pure, deterministic state machine, [Round]: it
// takes events (a client joined, left, refused, submitted an update; time
// passed) with explicit times and returns actions (send this client a task,
// aggregate these updates, fail the round). It does no I/O and owns no
// goroutine, so every corner of the protocol is tested without a network.
// The [Coordinator] is the thin driver: one goroutine owns the study and the
// current Round and feeds it events from the gRPC handlers.
//
// Two seams are left for what comes next: an [Aggregator] turns a round's
// opaque update payloads into the next model ([PlaintextAggregator] today,
// secure aggregation later), and a [RoundRecorder] is told about every
// finished round before the study moves on ([LogRecorder] today, the audit
// log later).
//
// # What it does not do
//
// It never sees patient data, only updates. It does not decide whether an
// update payload is plaintext or encrypted beyond checking its size and
// hash; aggregation owns that. It trusts no client-supplied identity: the
// client id is the CommonName of its verified certificate.
package coordinator

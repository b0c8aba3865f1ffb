// Package coordinator runs a study: it serves the Federation gRPC API to
// hospital clients and the StudyAdmin API to admins and observers (mutual
// TLS only), drives the study's protocol, adds the hospitals' updates and
// keeps every global model and server-optimiser state in a
// content-addressed store.
//
// # Shape
//
// The protocol itself is package [github.com/fedledger/fedledger/coordinator/study]:
// a pure machine that takes events and returns actions. This package is
// its driver (driver.go): one goroutine owns the machine and feeds it the
// events the gRPC handlers (server.go) decode and check, ticks, and the
// results of work; a worker goroutine does the work the machine asks for
// (work.go: the collective key, the sum of updates, decrypting the sum and
// applying the server optimiser; saving the key setup; appending records
// to the audit log through a [Recorder]). Messages go to sessions without
// ever blocking the driver. A restarted coordinator reads where the study
// stands from the audit log ([AuditRecorder.Begin]) and reloads the
// objects the log names (state.go).
//
// # What it does not do
//
// It never sees patient data, only updates, and in a secure study only
// ciphertexts and the decrypted sum of at least K of them: it holds no key
// material (aggregation/secure's Setup is public). It vouches for nothing
// on its own: the audit log's rules accept a round only with the
// hospitals' signatures, which the machine checks before it submits one.
// It trusts no client-supplied identity: a client is the CommonName of its
// verified certificate.
package coordinator

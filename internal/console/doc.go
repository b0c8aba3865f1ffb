// Package console is fedledger's read-only web console: HTML pages served
// by the coordinator (its study as the audit log vouches for it) and by
// each audit node (a log explorer), from the binary, with no script and no
// asset from anywhere else.
//
// # Two consoles
//
// The coordinator's console ([NewCoordinator]) shows the studies on the
// audit log, and for each one the timeline of its rounds (outcome,
// contributors, the sites left out, time), charts of each round's
// figures (the hospitals' signed evaluations of the round's starting
// model, contributions, record sizes, durations, ε spent), every site's
// participation, the privacy budget of a differentially private study,
// and the anomaly flags and norm-check exclusions. It builds these from
// the log, as `fedledger verify` does: it exports the log, checks the
// checkpoint against the audit nodes' keys, replays every entry through
// the audit rules and recomputes the root ([audit.ReplayBundle]); the
// coordinator's live status (what `fedledger study status` prints) is
// shown beside it, marked as the coordinator's word.
//
// An audit node's console ([NewAuditNode]) lists the entries of its
// replica (paged), the checkpoint the voters cosign now and this node's
// witness memory, an entry's inclusion proof checked against a cosigned
// checkpoint, and a page that verifies a model file (uploaded, or named by
// its SHA-256) against the log exactly as `fedledger verify` does.
//
// # Access
//
// [Start] serves a console. With a consortium identity and CA it serves
// TLS 1.3 and reads the caller's client certificate: one issued by the
// consortium CA with the observer or admin role may read; any other
// caller gets 403 Forbidden naming the reason (no certificate, not the
// consortium's, expired, another role). Without them it serves plain HTTP,
// and only on a loopback address: that is the demo's console
// (`fedledger demo --serve`), never a deployment's.
//
// Browsers do not speak Ed25519 in TLS, and consortium certificates are
// Ed25519, so a person reaches a deployment's console through [NewProxy]
// (`fedledger console`), which holds their certificate and serves the
// console to their own browser on loopback.
//
// # What it does not do
//
// It changes nothing: every page is a GET except the model check, a POST
// that only reads. It keeps no history beyond the checkpoints it has seen
// since it started. Charts are SVG drawn on the server (charts.go); there
// is no JavaScript.
package console

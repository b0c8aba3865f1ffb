// Package tlsutil owns fedledger's identities: a consortium certificate
// authority, the Ed25519 certificates it issues, and the mutual-TLS
// configurations every link uses.
//
// # Identity
//
// A certificate's Subject CommonName is the participant id (e.g.
// "cleveland") and its first OrganizationalUnit is the participant's [Role].
// The same Ed25519 key authenticates the participant's TLS connections and
// signs what it contributes (model updates, audit records), so one
// certificate answers both "who is on this connection" and "who signed this".
//
// # What it does not do
//
// It does not decide what a role may do (the services do, from [Peer]), and
// it does not provision consortia (that is `fedledger provision`). There is
// no insecure mode here: every configuration requires and verifies the peer.
package tlsutil

// Package secure aggregates model updates under Lattigo v5 multiparty CKKS
// (package mhe), so that the coordinator only ever adds ciphertexts and can
// decrypt nothing but the sum of at least t clients' cooperation.
//
// # Protocol (Mouchet et al., "Multiparty Homomorphic Encryption from
// Ring-Learning-with-Errors", and "An Efficient Threshold Access-Structure
// for RLWE-Based Multiparty Homomorphic Encryption", 2022)
//
//  1. Key setup. Every party samples a secret-key share; from a common
//     reference string (a seed in the study configuration) each sends a
//     public-key share, and the aggregator sums them into the collective
//     public key. Each party then splits its secret share t-of-N with
//     Shamir sharing ([Party.ThresholdShares]) and sums the shares it
//     receives ([Party.SetThresholdShares]).
//  2. Encryption. A party encodes n·Δ followed by n (so the sum carries the
//     total weight) into CKKS slots, real and imaginary parts both, so a
//     chunk of ring degree N carries N reals, and encrypts each chunk
//     under its own key share with a public polynomial every party
//     regenerates from (key, study, round, chunk) ([Nonce]): only c0
//     travels. [Participant.Contribute] keeps what it sent and never
//     encrypts a second update for a round.
//  3. Aggregation. The aggregator adds the c0s ([Sum]).
//  4. Decryption. Any t parties sum the Shamir shares they hold of the
//     listed contributors' key shares, turn them into additive shares for
//     that active set and key-switch the sum to the zero key with noise
//     flooding (sigma from the preset); the aggregator combines the t
//     shares and decodes publicly, rounding away the low bits (the
//     Li-Micciancio attack, Lattigo SECURITY.md). A share is given once
//     per round and resent as is ([ShareGuard]).
//
// # Wire objects
//
// Every object that crosses the network has a strict decoder that checks
// it against the study's preset, study id and round before decoding the
// Lattigo body: polynomial envelopes ([SealPolys], [OpenEnvelope],
// [Envelope.Poly], [OpenPolys]), CKG shares ([SealPublicKeyShare],
// [OpenPublicKeyShare]), decryption shares (polynomials too) and Shamir share boxes, end-to-end encrypted
// to the recipient with X25519, HKDF-SHA256 and ChaCha20-Poly1305
// ([SealShare], [OpenShare]). [ShareGuard] enforces the client-side rules
// before a party gives a decryption share.
//
// # What it does not do
//
// It does not move bytes or bind X25519 keys to identity certificates: the
// coordinator and client carry these objects on the Federation stream, and
// that wiring belongs to them. It owns no model or training code.
package secure

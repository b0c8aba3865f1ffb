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
//     ciphertext of ring degree N carries N reals.
//  3. Aggregation. The aggregator adds ciphertexts ([Sum]).
//  4. Decryption. Any t parties turn their Shamir shares into additive
//     shares for that active set and key-switch the sum to the zero key with
//     noise flooding (sigma from the preset); the aggregator combines the t
//     shares and decodes with DecodePublic, which sanitises the output
//     against the Li-Micciancio key-recovery attack (Lattigo SECURITY.md).
//
// # Wire objects
//
// Every object that crosses the network has a strict decoder that checks
// it against the study's preset, study id and round before decoding the
// Lattigo body: ciphertext envelopes ([SealCiphertexts], [OpenEnvelope],
// [Envelope.Ciphertext]), CKG shares ([SealPublicKeyShare],
// [OpenPublicKeyShare]), decryption shares ([SealDecryptionShares],
// [Envelope.DecryptionShare]) and Shamir share boxes, end-to-end encrypted
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

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
// # What it does not do (yet)
//
// It does not move bytes: the coordinator and client will carry these
// objects on the Federation stream. The Shamir shares must travel
// end-to-end encrypted to their recipient; that wrapping, the strict
// envelope decoders and the client-side decryption rules are the next step
// of the secure-aggregation issue.
package secure

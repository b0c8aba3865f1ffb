// Package privacy accounts for and produces the noise behind fedledger's
// differential-privacy (DP) features.
//
// # Accounting
//
// Training with DP-SGD or DP-FedAvg repeats the sampled Gaussian mechanism:
// each step includes every record independently with probability q (the
// sampling rate), clips each contribution to L2 norm C and adds Gaussian
// noise of standard deviation sigma·C, where sigma is the noise multiplier.
// The package tracks the Rényi differential privacy (RDP) of such runs and
// converts it to an (ε, δ) guarantee:
//
//   - [RDP] is the RDP of the sampled Gaussian mechanism, computed as in
//     TensorFlow Privacy's rdp_accountant.py and Opacus's
//     accountants/analysis/rdp.py, following Mironov, "Rényi Differential
//     Privacy" (CSF 2017) and Mironov, Talwar and Zhang, "Rényi Differential
//     Privacy of the Sampled Gaussian Mechanism" (arXiv:1908.10530, 2019).
//   - [Epsilon] converts RDP to (ε, δ) with the bound of Balle et al.,
//     "Hypothesis Testing Interpretations and Rényi Differential Privacy"
//     (AISTATS 2020, Theorem 21), also in Canonne, Kamath and Steinke, "The
//     Discrete Gaussian for Differential Privacy" (NeurIPS 2020), as Opacus's
//     get_privacy_spent does. [EpsilonClassic] is Mironov's original
//     Proposition 3, kept for comparison with older published figures.
//   - [Accountant] composes heterogeneous steps, and [EpsilonFor] recomputes
//     the same ε from a declared list of [Entry] values: it is a pure function
//     of the multiset of steps, so an audit node and the coordinator that
//     declared the steps get the same number on the same platform.
//   - [NoiseMultiplier] calibrates: it finds the smallest noise multiplier
//     whose ε stays within a budget.
//
// # Noise
//
// [Gaussian] draws normal variates from crypto/rand, for adding calibrated
// noise to model updates.
package privacy

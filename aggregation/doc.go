// Package aggregation turns clients' model updates into the next global
// model, in plaintext: the weighted-update wire encoding, the weighted
// average, and the server optimisers of Reddi et al., "Adaptive Federated
// Optimization" (ICLR 2021): FedAvg, FedAdam, FedYogi and FedAdagrad.
//
// It sees only flat parameter vectors and sample counts, never a model's
// shape or a client's data. Encrypted aggregation lives in
// aggregation/secure; both produce the same input for a [ServerOptimizer]:
// the sample-weighted average of the clients' deltas.
//
// FedProx needs no server side of its own: it is FedAvg with the proximal
// term in the clients' local training (model.TrainConfig.ProxMu).
package aggregation

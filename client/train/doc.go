// Package train owns what happens inside a hospital: loading and
// preprocessing local data, the models (logistic regression and an MLP built
// with Gorgonia), local training, evaluation metrics, and the model file
// format.
//
// # Models as flat vectors
//
// A model is a [ModelSpec] plus a flat []float64 of parameters, so that
// aggregation (plaintext or encrypted) never needs to know a model's shape.
// The layout is, layer by layer from the input, the weight matrix in
// row-major order (inputs × outputs) followed by the bias vector; the last
// layer has one output (the logit). Logistic regression is the one-layer
// case: Inputs weights, then one bias.
//
// # What it does not do
//
// It does not talk to the network or know about rounds; the client package
// drives it. Data never leaves it except as parameters.
package train

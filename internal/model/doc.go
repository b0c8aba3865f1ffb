// Package model is what every party agrees a model is: its architecture
// ([Spec]: logistic regression or an MLP, as a flat parameter vector), its
// deterministic initial parameters ([InitParams]), the model file that the
// coordinator stores under its SHA-256, a regulator verifies and a hospital
// trains from ([Encode], [Decode]), the local-training hyperparameters a
// study fixes ([TrainConfig]) and the metrics sites report ([Metrics]).
//
// # Models as flat vectors
//
// A model is a Spec plus a flat []float64 of parameters, so that
// aggregation (plaintext or encrypted) never needs to know a model's shape.
// The layout is, layer by layer from the input, the weight matrix in
// row-major order (inputs × outputs) followed by the bias vector; the last
// layer has one output (the logit). Logistic regression is the one-layer
// case: Inputs weights, then one bias.
//
// # What it does not own
//
// Training, evaluation and data loading (Gorgonia, CSV) are client/train's;
// nothing here imports Gorgonia, so the coordinator and the verifier can
// read model files without it.
package model

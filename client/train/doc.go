// Package train owns what happens inside a hospital: loading and
// preprocessing local data, the models (logistic regression and an MLP built
// with Gorgonia) over the flat parameter vectors of package
// [github.com/fedledger/fedledger/internal/model], local training and
// evaluation.
//
// # What it does not do
//
// It does not talk to the network or know about rounds; the client package
// drives it. Data never leaves it except as parameters. The model file
// format and the study's training hyperparameters are package model's, so
// that the coordinator and the verifier never link Gorgonia.
package train

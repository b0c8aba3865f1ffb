package model

// Metrics of a model on a dataset.
type Metrics struct {
	Loss     float64 // mean binary cross-entropy
	Accuracy float64 // at threshold 0.5
	AUC      float64 // ROC AUC (0.5 when only one class is present)
	N        int
}

package coordinator

import (
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// RoundReport is what happened in one round.
type RoundReport struct {
	Round        int
	Contributors []string
	Dropped      []string
	Failed       bool
	Reason       string
	// Parent is the round's starting model; Model its output (the
	// unchanged parent if it failed).
	Parent   [32]byte
	Model    [32]byte
	Duration time.Duration
	// ParentTest holds each contributor's metrics of the round's starting
	// model on its local test split.
	ParentTest map[string]model.Metrics
	// TrainLoss is the sample-weighted mean local training loss.
	TrainLoss float64
	// Decryptors are the key holders whose decryption shares opened the
	// aggregate (secure mode).
	Decryptors []string
	// Contributions are the accepted updates, in site order, each with its
	// hospital's signature.
	Contributions []audit.Contribution
	// DecryptionShares are the signed shares that opened the aggregate
	// (secure mode), in site order.
	DecryptionShares []audit.DecryptionShare
	// AggregateHash is the SHA-256 of the aggregate payload that was
	// decrypted (secure mode).
	AggregateHash [32]byte
}

// StudyResult is the outcome of a study.
type StudyResult struct {
	Study      string
	Model      [32]byte
	ModelBytes []byte
	Rounds     []RoundReport
	// FinalTest holds each client's metrics of the final model on its local
	// test split.
	FinalTest map[string]model.Metrics
}

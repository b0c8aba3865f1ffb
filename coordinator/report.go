package coordinator

import (
	"time"

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
	// Contributions are the accepted updates, in client-id order.
	Contributions []ContributionInfo
	// AggregateHash is the SHA-256 of the aggregate payload that was
	// decrypted (secure mode).
	AggregateHash [32]byte
}

// ContributionInfo is one accepted update as the record of a round lists
// it.
type ContributionInfo struct {
	Client string
	// Hash is the SHA-256 of the update payload; Signature the client's
	// signature over it (secure mode).
	Hash      [32]byte
	Signature []byte
	Samples   uint64
	// DataManifest is the SHA-256 of the client's data manifest, covered
	// by its signature.
	DataManifest [32]byte
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

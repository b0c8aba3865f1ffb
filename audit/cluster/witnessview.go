package cluster

import "github.com/fedledger/fedledger/audit"

// LastCosigned is the last checkpoint this node cosigned as a witness (its
// witness.json memory), and false when it has cosigned none.
func (n *Node) LastCosigned() (audit.Checkpoint, bool) {
	n.witness.mu.Lock()
	defer n.witness.mu.Unlock()
	if n.witness.last == nil {
		return audit.Checkpoint{}, false
	}
	return *n.witness.last, true
}

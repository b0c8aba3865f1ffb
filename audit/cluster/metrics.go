package cluster

import (
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// nodeMetrics are an audit node's Prometheus series, in its own registry.
type nodeMetrics struct {
	reg           *prometheus.Registry
	appends       *prometheus.CounterVec
	appendSeconds prometheus.Histogram
	checkpoints   *prometheus.CounterVec
	handshakes    *prometheus.CounterVec
	corruption    *prometheus.CounterVec
	state         *prometheus.GaugeVec
	// access counts authorized calls by identity and RPC; accessFlags
	// the windows flagged as unusual, by identity.
	access, accessFlags *prometheus.CounterVec
}

func newNodeMetrics(n *Node) *nodeMetrics {
	labels := prometheus.Labels{"node": n.id}
	m := &nodeMetrics{
		reg: prometheus.NewRegistry(),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_audit_appends_total", Help: "Append requests handled by this node, by result (committed, rejected, unavailable).", ConstLabels: labels,
		}, []string{"result"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedledger_audit_append_duration_seconds", Help: "Time to commit an append (Raft commit with fsync, FSM apply).",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_audit_checkpoints_total", Help: "Checkpoints signed (leader) and cosigned or refused (witness).", ConstLabels: labels,
		}, []string{"result"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_audit_refused_handshakes_total", Help: "TLS handshakes this node refused, by reason (unknown_ca, expired_certificate, no_certificate, ...).", ConstLabels: labels,
		}, []string{"reason"}),
		corruption: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_audit_corruption_detected_total", Help: "Integrity checks of this node's stored state that failed since it started, by what failed (raft.db, log entry, stable store, snapshot, tree, frame, recovered tree). Any is worth an alert.", ConstLabels: labels,
		}, []string{"check"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fedledger_audit_replica_state", Help: "1 for this node's replica state: healthy, recovering (corruption found at start, catching up from the quorum), halted (corruption found while running: restart it), inconsistent (the quorum contradicts what it cosigned).", ConstLabels: labels,
		}, []string{"state"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	m.access = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_audit_access_total", Help: "Calls this node authorized, by the caller's identity and the RPC (reads and appends).", ConstLabels: labels,
	}, []string{"identity", "rpc"})
	m.accessFlags = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_audit_access_anomalies_total", Help: "Windows in which an identity called this node far more than it usually does (robust z-score on its own history).", ConstLabels: labels,
	}, []string{"identity"})
	m.reg.MustRegister(m.access, m.accessFlags)
	m.reg.MustRegister(m.appends, m.appendSeconds, m.checkpoints, m.handshakes, m.corruption, m.state,
		gauge("fedledger_audit_corruption_evidence", "Evidence directories under data_dir/evidence (damaged state this node set aside); stays non-zero until an operator removes them.", func() float64 {
			entries, _ := os.ReadDir(filepath.Join(n.cfg.DataDir, evidenceDir))
			return float64(len(entries))
		}),
		gauge("fedledger_audit_tree_size", "Entries in this replica's Merkle log.", func() float64 { return float64(n.fsm.Ledger().Log().Size()) }),
		gauge("fedledger_audit_is_leader", "1 when this node is the Raft leader.", func() float64 {
			if n.raft != nil && n.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("fedledger_audit_raft_applied_index", "Last Raft index applied to the FSM.", func() float64 {
			if n.raft == nil {
				return 0
			}
			return float64(n.raft.AppliedIndex())
		}),
		gauge("fedledger_audit_witness_evidence", "Inconsistent signed checkpoints this node has refused and kept.", func() float64 {
			n.witness.mu.Lock()
			defer n.witness.mu.Unlock()
			return float64(len(n.witness.evidence))
		}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics is the node's Prometheus registry.
func (n *Node) Metrics() *prometheus.Registry { return n.metrics.reg }

package coordinator

import (
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the coordinator's Prometheus series. Each Coordinator has its
// own registry, so several can live in one process (tests, the demo).
type metrics struct {
	reg             *prometheus.Registry
	rounds          *prometheus.CounterVec
	roundSeconds    prometheus.Histogram
	updates         *prometheus.CounterVec
	updateBytes     prometheus.Counter
	connected       prometheus.Gauge
	plaintextMode   prometheus.Gauge
	refusals        prometheus.Counter
	phaseSeconds    *prometheus.HistogramVec
	keySetupSeconds prometheus.Gauge
	shares          *prometheus.CounterVec
	countersigs     *prometheus.CounterVec
	sketches        *prometheus.CounterVec
	siteTest        *prometheus.GaugeVec
	refusedTLS      *prometheus.CounterVec
	// dpBudget and dpSpent: a DP study's ε budget and the ε each hospital
	// has spent after the last committed round.
	dpBudget, dpSpent prometheus.Gauge
	projections       *prometheus.CounterVec
	anomalies         *prometheus.CounterVec
	exclusions        *prometheus.CounterVec
}

func newMetrics(study string) *metrics {
	labels := prometheus.Labels{"study": study}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_coordinator_rounds_total", Help: "Rounds finished, by outcome (aggregated or failed).", ConstLabels: labels,
		}, []string{"outcome"}),
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedledger_coordinator_round_duration_seconds", Help: "Time from announcing a round to aggregating or failing it.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_coordinator_updates_total", Help: "Model updates received, by result (accepted or rejected).", ConstLabels: labels,
		}, []string{"result"}),
		updateBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedledger_coordinator_update_bytes_total", Help: "Payload bytes of accepted updates.", ConstLabels: labels,
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedledger_coordinator_connected_clients", Help: "Hospital clients with a live Participate stream.", ConstLabels: labels,
		}),
		plaintextMode: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedledger_coordinator_plaintext_mode", Help: "1 when updates are NOT encrypted (plaintext mode).", ConstLabels: labels,
		}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedledger_coordinator_task_refusals_total", Help: "Tasks clients refused (policy, bad model, local errors).", ConstLabels: labels,
		}),
		phaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fedledger_coordinator_phase_duration_seconds", Help: "Time per round phase (aggregate, sketch, decryption_shares, combine, countersign, record; *_work: the coordinator's own computation).",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"phase"}),
		keySetupSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedledger_coordinator_key_setup_seconds", Help: "Duration of the secure key setup (0 until done, or in plaintext mode).", ConstLabels: labels,
		}),
		shares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_coordinator_decryption_shares_total", Help: "Decryption shares received, by result (accepted or rejected).", ConstLabels: labels,
		}, []string{"result"}),
	}
	m.countersigs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_countersignatures_total", Help: "Hospitals' countersignatures of round outcomes, by result (accepted or rejected).", ConstLabels: labels,
	}, []string{"result"})
	m.sketches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_sketches_total", Help: "Contributors' signed sketches of their contributions (secure mode), by result: accepted, rejected, or missing (the decryptors download that contribution).", ConstLabels: labels,
	}, []string{"result"})
	m.siteTest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedledger_coordinator_site_test", Help: "The last committed round's evaluation at each site on its own test split, as the site reported it: model is global (the round's start model) or personal (the site's own); metric is accuracy, auc or loss.", ConstLabels: labels,
	}, []string{"site", "model", "metric"})
	m.refusedTLS = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_refused_handshakes_total", Help: "TLS handshakes refused, by reason (unknown CA, expired or missing certificate, ...).", ConstLabels: labels,
	}, []string{"reason"})
	m.dpBudget = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fedledger_coordinator_dp_epsilon_budget", Help: "A differentially private study's epsilon budget per hospital (at its delta); 0 for a study without DP.", ConstLabels: labels,
	})
	m.dpSpent = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fedledger_coordinator_dp_epsilon_spent", Help: "The epsilon each hospital has spent after the last committed round of a differentially private study, as its round record states and the audit rules recompute.", ConstLabels: labels,
	})
	m.projections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_norm_checks_total", Help: "Contributions checked against the study's norm bound under encryption, by result: within, excluded (left out of the aggregate) or rejected (malformed projection shares).", ConstLabels: labels,
	}, []string{"result"})
	m.anomalies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_anomaly_flags_total", Help: "Anomaly flags on a site's signals in a completed round (reported test loss of the parent, upload time, the disclosed projection over its bound), by site; each is on the round's record.", ConstLabels: labels,
	}, []string{"site"})
	m.exclusions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_coordinator_exclusions_total", Help: "Admins' exclusions and readmissions of sites the study applied (on the audit log).", ConstLabels: labels,
	}, []string{"change"})
	m.reg.MustRegister(m.countersigs, m.sketches, m.siteTest, m.refusedTLS, m.dpBudget, m.dpSpent, m.projections, m.anomalies, m.exclusions)
	m.reg.MustRegister(m.rounds, m.roundSeconds, m.updates, m.updateBytes, m.connected, m.plaintextMode, m.refusals,
		m.phaseSeconds, m.keySetupSeconds, m.shares,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// rounds sets the per-site evaluation gauges from a committed round.
func (m *metrics) round(r study.RoundReport) {
	for which, ms := range map[string]map[string]model.Metrics{"global": r.ParentTest, "personal": r.PersonalTest} {
		for site, v := range ms {
			m.siteTest.WithLabelValues(site, which, "accuracy").Set(v.Accuracy)
			m.siteTest.WithLabelValues(site, which, "auc").Set(v.AUC)
			m.siteTest.WithLabelValues(site, which, "loss").Set(v.Loss)
		}
	}
}

// observe applies a study machine's measurement.
func (m *metrics) observe(o study.Observe) {
	switch o.Metric {
	case study.MetricConnected:
		m.connected.Set(o.Value)
	case study.MetricRefusals:
		m.refusals.Add(o.Value)
	case study.MetricUpdates:
		m.updates.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricUpdateBytes:
		m.updateBytes.Add(o.Value)
	case study.MetricShares:
		m.shares.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricSketches:
		m.sketches.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricProjections:
		m.projections.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricAnomalies:
		m.anomalies.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricExclusions:
		m.exclusions.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricCountersignatures:
		m.countersigs.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricRounds:
		m.rounds.WithLabelValues(o.Label).Add(o.Value)
	case study.MetricRoundSeconds:
		m.roundSeconds.Observe(o.Value)
	case study.MetricPhaseSeconds:
		m.phaseSeconds.WithLabelValues(o.Label).Observe(o.Value)
	case study.MetricKeySetupSeconds:
		m.keySetupSeconds.Set(o.Value)
	}
}

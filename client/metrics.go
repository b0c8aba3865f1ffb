package client

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a hospital client's Prometheus series, in its own registry.
type metrics struct {
	reg         *prometheus.Registry
	connected   prometheus.Gauge
	rounds      *prometheus.CounterVec
	updateSize  prometheus.Counter
	phase       *prometheus.HistogramVec
	shares      *prometheus.CounterVec
	refusals    prometheus.Counter
	checkFetch  prometheus.Counter
	checkBytes  *prometheus.CounterVec
	sketches    *prometheus.CounterVec
	countersigs *prometheus.CounterVec
	dpSpent     prometheus.Gauge
}

func newMetrics(site string) *metrics {
	labels := prometheus.Labels{"site": site}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		dpSpent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedledger_client_dp_epsilon_spent", Help: "The epsilon of record-level differential privacy this site has spent in its study, by its own account (at the study's delta).", ConstLabels: labels,
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedledger_client_connected", Help: "1 while the Participate stream to the coordinator is up.", ConstLabels: labels,
		}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_client_rounds_total", Help: "Train tasks, by outcome (submitted or failed).", ConstLabels: labels,
		}, []string{"outcome"}),
		updateSize: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedledger_client_update_bytes_total", Help: "Update payload bytes sent.", ConstLabels: labels,
		}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fedledger_client_phase_duration_seconds", Help: "Time per task phase (train, encode, upload, sketch, decryption_share, countersign).",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"phase"}),
		shares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_client_decryption_shares_total", Help: "Decryption requests, by result (given or refused).", ConstLabels: labels,
		}, []string{"result"}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedledger_client_study_refusals_total", Help: "Studies refused at Welcome (policy, capability).", ConstLabels: labels,
		}),
		checkFetch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedledger_client_aggregate_check_downloads_total", Help: "Other sites' contributions downloaded whole to check an aggregate before a decryption share (those without a sketch, or all when the sketches do not add up).", ConstLabels: labels,
		}),
		checkBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_client_aggregate_check_bytes_total", Help: "Bytes a decryptor received to check aggregates, by source (contributions downloaded, sketches in the task).", ConstLabels: labels,
		}, []string{"source"}),
		sketches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedledger_client_sketches_total", Help: "Sketches of this site's contributions asked for, by result (given or refused).", ConstLabels: labels,
		}, []string{"result"}),
	}
	m.countersigs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedledger_client_countersignatures_total", Help: "Round outcomes this site was asked to countersign, by result (given or refused).", ConstLabels: labels,
	}, []string{"result"})
	m.reg.MustRegister(m.dpSpent)
	m.reg.MustRegister(m.countersigs, m.checkBytes, m.sketches)
	m.reg.MustRegister(m.connected, m.rounds, m.updateSize, m.phase, m.shares, m.refusals, m.checkFetch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics is the client's Prometheus registry, for an HTTP /metrics
// handler.
func (c *Client) Metrics() *prometheus.Registry { return c.metrics.reg }

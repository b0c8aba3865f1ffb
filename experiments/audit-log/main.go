// Command audit-log measures the audit log: append latency (p50, p99) and
// throughput on clusters of 3 and 5 nodes over TCP with mutual TLS on
// loopback, bbolt with fsync on every node; and offline verification time
// and bundle size per round for studies of 10 to 100,000 rounds. It writes
// results.csv, results.md and plots beside itself.
//
//	go run ./experiments/audit-log [-quick] [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

func main() {
	quick := flag.Bool("quick", false, "small sizes (tests)")
	out := flag.String("out", "experiments/audit-log", "output directory")
	flag.Parse()
	if err := run(context.Background(), *quick, *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

type pki struct{ *audittest.PKI }

func newPKI() (*pki, error) {
	ca, err := tlsutil.NewCA("audit experiment", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	p, err := audittest.IssuePKI(ca)
	return &pki{p}, err
}

// records returns the signed records of a secure study with n completed
// rounds, as a real deployment logs them: the study (three sites, K = 2,
// t = 2), the key setup signed by the three key holders, and rounds with
// three signed contributions, two decryption shares and two
// countersignatures each. It also returns the last round's output.
func (p *pki) records(study string, n int) ([][]byte, audit.Hash, error) {
	b := p.NewBuilder(audittest.Options{ID: study, Rounds: uint32(n), Threshold: 2}, time.Now().UnixNano())
	out := [][]byte{}
	add := func(id *tlsutil.Identity, rec *audit.Record) error {
		env, err := audit.Sign(id, rec)
		if err != nil {
			return err
		}
		out = append(out, env.Marshal())
		return nil
	}
	if err := add(p.Admin, b.Study); err != nil {
		return nil, audit.Hash{}, err
	}
	if err := add(p.Coord, b.KeySetup); err != nil {
		return nil, audit.Hash{}, err
	}
	for _, rec := range b.Chain(n, audittest.Sites...) {
		if err := add(p.Coord, rec); err != nil {
			return nil, audit.Hash{}, err
		}
	}
	return out, audittest.Output(uint64(n)), nil
}

// startCluster starts n audit nodes on loopback (internal/fedtest's
// cluster, with the production Raft timeouts) and issues, from the same CA,
// the consortium whose records they log.
func startCluster(ctx context.Context, n int) (*pki, []*cluster.Node, func(), error) {
	dir, err := os.MkdirTemp("", "fedledger-audit-exp-")
	if err != nil {
		return nil, nil, nil, err
	}
	fp, err := fedtest.NewPKI("", n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	ap, err := audittest.IssuePKI(fp.CA)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	ac, err := fedtest.StartAuditCluster(ctx, fp, dir, fedtest.AuditOptions{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	return &pki{ap}, ac.Nodes, func() { ac.Close(); os.RemoveAll(dir) }, nil
}

type appendRow struct {
	nodes     int
	p50, p99  time.Duration
	perSecond float64
}

type verifyRow struct {
	rounds      int
	seconds     float64
	bundleBytes int
}

func run(ctx context.Context, quick bool, outDir string, progress io.Writer) error {
	p, err := newPKI()
	if err != nil {
		return err
	}
	sizes, sequential, writers, perWriter := []int{3, 5}, 300, 16, 40
	verifySizes := []int{10, 100, 1_000, 10_000, 100_000}
	if quick {
		sizes, sequential, writers, perWriter, verifySizes = []int{3}, 20, 2, 5, []int{10, 100}
	}
	var appends []appendRow
	for _, n := range sizes {
		cp, nodes, stop, err := startCluster(ctx, n)
		if err != nil {
			return err
		}
		leader := nodes[0]
		for _, nd := range nodes {
			if nd.IsLeader() {
				leader = nd
			}
		}
		envs, _, err := cp.records(fmt.Sprintf("seq-%d", n), sequential)
		if err != nil {
			stop()
			return err
		}
		var lat []time.Duration
		for _, e := range envs {
			t := time.Now()
			if _, err := leader.Append(ctx, e); err != nil {
				stop()
				return err
			}
			lat = append(lat, time.Since(t))
		}
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		var batches [][][]byte
		total := 0
		for w := 0; w < writers; w++ {
			envs, _, err := cp.records(fmt.Sprintf("par-%d-%d", n, w), perWriter)
			if err != nil {
				stop()
				return err
			}
			batches, total = append(batches, envs), total+len(envs)
		}
		start := time.Now()
		for w, envs := range batches {
			nd := nodes[w%len(nodes)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, e := range envs {
					if _, err := nd.Append(ctx, e); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		tput := float64(total) / time.Since(start).Seconds()
		stop()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		r := appendRow{nodes: n, p50: expkit.Percentile(lat, 50), p99: expkit.Percentile(lat, 99), perSecond: tput}
		appends = append(appends, r)
		fmt.Fprintf(progress, "%d nodes: append p50 %v p99 %v, %d concurrent writers %.0f appends/s\n", n, r.p50, r.p99, writers, r.perSecond)
	}

	var verifies []verifyRow
	for _, rounds := range verifySizes {
		envs, final, err := p.records("verify", rounds)
		if err != nil {
			return err
		}
		l := audit.NewLedger(p.CA.Pool())
		for _, e := range envs {
			if _, err := l.Apply(e); err != nil {
				return err
			}
		}
		size, root, _ := l.Root()
		nodeID, _ := p.CA.Issue("audit-0", tlsutil.RoleAuditNode, nil, 24*time.Hour)
		signer, err := audit.NoteSigner(nodeID)
		if err != nil {
			return err
		}
		cp, err := audit.SignCheckpoint(audit.Checkpoint{Origin: "experiment/audit-log", Size: size, Root: root}, signer)
		if err != nil {
			return err
		}
		b := &audit.Bundle{Checkpoint: cp, Leaves: envs}
		v, _ := audit.NoteVerifier(tlsutil.Peer{ID: nodeID.ID, Role: nodeID.Role, Cert: nodeID.Cert})
		trust := audit.Trust{Roots: p.CA.Pool(), Keys: note.VerifierList(v), Quorum: 1}
		t := time.Now()
		lin, err := audit.VerifyBundle(b, trust, "verify", final)
		if err != nil || len(lin.Steps) != rounds {
			return fmt.Errorf("verify %d rounds: %v", rounds, err)
		}
		r := verifyRow{rounds: rounds, seconds: time.Since(t).Seconds(), bundleBytes: len(b.Marshal())}
		verifies = append(verifies, r)
		fmt.Fprintf(progress, "verify %6d rounds: %.3fs, bundle %d bytes (%.0f bytes/round)\n", rounds, r.seconds, r.bundleBytes, float64(r.bundleBytes)/float64(rounds))
	}
	return write(outDir, appends, verifies, writers)
}

func write(dir string, appends []appendRow, verifies []verifyRow, writers int) error {
	var rows [][]string
	for _, a := range appends {
		rows = append(rows, []string{"append", strconv.Itoa(a.nodes), "", fmt.Sprintf("%.3f", ms(a.p50)), fmt.Sprintf("%.3f", ms(a.p99)), fmt.Sprintf("%.1f", a.perSecond), "", ""})
	}
	for _, v := range verifies {
		rows = append(rows, []string{"verify", "", strconv.Itoa(v.rounds), "", "", "", fmt.Sprintf("%.4f", v.seconds), strconv.Itoa(v.bundleBytes)})
	}
	if err := expkit.WriteCSV(filepath.Join(dir, "results.csv"), []string{"measure", "nodes", "rounds", "append_p50_ms", "append_p99_ms", "appends_per_s", "verify_s", "bundle_bytes"}, rows); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Machine: %s (all nodes share one disk). Command: `go run ./experiments/audit-log`.\n\n### Appends (TCP + mutual TLS on loopback, bbolt fsync on every node)\n\n", expkit.Machine())
	var t [][]string
	for _, a := range appends {
		t = append(t, []string{strconv.Itoa(a.nodes), fmt.Sprintf("%.2f", ms(a.p50)), fmt.Sprintf("%.2f", ms(a.p99)), fmt.Sprintf("%.0f", a.perSecond)})
	}
	expkit.WriteTable(&md, []string{"nodes", "sequential append p50 ms", "p99 ms", fmt.Sprintf("appends/s, %d concurrent writers", writers)}, t)
	fmt.Fprintf(&md, "\n### Offline verification (one study; every record re-checked, tree recomputed)\n\n")
	t = nil
	var xs, secs, per []float64
	for _, v := range verifies {
		t = append(t, []string{strconv.Itoa(v.rounds), fmt.Sprintf("%.3f", v.seconds), fmt.Sprintf("%.1f", float64(v.bundleBytes)/(1<<20)), fmt.Sprintf("%.0f", float64(v.bundleBytes)/float64(v.rounds))})
		xs, secs, per = append(xs, float64(v.rounds)), append(secs, v.seconds), append(per, float64(v.bundleBytes)/float64(v.rounds))
	}
	expkit.WriteTable(&md, []string{"rounds", "verify s", "bundle MiB", "bundle bytes/round"}, t)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	return expkit.Lines(filepath.Join(dir, "verify_time.png"), "Offline verification of a study's bundle", "rounds", "seconds", true, true,
		expkit.Series{Name: "verify time", X: xs, Y: secs})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestConsolesOverMutualTLS: the consoles that `fedledger coordinator`
// and `fedledger audit-node` serve on console.addr, on a real three-node
// audit log after a study. They are mutual TLS with the server's own
// certificate; the checkpoint keys are learnt from the live audit nodes'
// certificates, so the study page and an entry's inclusion proof check
// out against them; an observer reads, a hospital is refused with 403.
func TestConsolesOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	strat, err := aggregation.DefaultConfig("fedavg")
	if err != nil {
		t.Fatal(err)
	}
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps = 0, 10
	st := coordinator.StudyConfig{ID: "console-study", Model: model.Spec{Kind: model.KindLogReg, Inputs: 13}, Training: tc, Rounds: 2,
		MinClients: 3, Clients: train.Hospitals, RoundDeadline: 30 * time.Second, StartTimeout: 30 * time.Second, Strategy: strat, Seed: 1,
		Mode: coordinator.ModePlaintext}
	fed, err := fedtest.Start(ctx, fedtest.Config{Dir: t.TempDir(), Study: st, AuditNodes: 3, Expires: time.Now().Add(time.Hour),
		Data: func(site string) client.DataConfig { return client.DataConfig{Heart: site} }})
	if err != nil {
		t.Fatal(err)
	}
	defer fed.Close()
	if err := fed.StartClients(); err != nil {
		t.Fatal(err)
	}
	if _, err := fed.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	pool := fed.PKI.CA.Pool()

	// The coordinator's console, as coordinator.go starts it.
	alog, err := fed.AuditClient(fed.PKI.Coordinator)
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	cc := &config.Coordinator{Identity: fed.PKI.Coordinator, AuditTLS: tlsutil.ClientConfig(fed.PKI.Coordinator, pool, ""),
		Config: coordinator.Config{TLS: tlsutil.ServerConfig(fed.PKI.Coordinator, pool)}}
	cc.File.Audit.Nodes = fed.Audit.Addrs
	coordAddr := freeAddr(t)
	stop, err := startCoordinatorConsole(coordAddr, cc, fed.Coordinator(), alog, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// An audit node's, as auditnode.go starts it.
	ac := &config.AuditNode{Config: cluster.NodeConfig{Identity: fed.PKI.AuditNodes[1], Roots: pool, Origin: fed.Audit.Origin}}
	auditAddr := freeAddr(t)
	stop, err = startAuditConsole(auditAddr, ac, fed.Audit.Nodes[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	hospital, err := fed.PKI.Site("cleveland")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url    string
		as     *tlsutil.Identity
		status int
		want   []string
	}{
		{"https://" + coordAddr + "/studies/console-study", fed.PKI.Regulator, 200,
			[]string{`id="rounds-completed">2<`, "signed by audit-", "(2 needed)", "regulator (observer)"}},
		{"https://" + coordAddr + "/", fed.PKI.Admin, 200, []string{`data-study="console-study"`}},
		{"https://" + coordAddr + "/", hospital, 403, []string{`&#34;cleveland&#34; has the client role`}},
		{"https://" + auditAddr + "/entries/2", fed.PKI.Regulator, 200, []string{`class="verdict ok">VERIFIED<`, "audit node audit-2"}},
		{"https://" + auditAddr + "/checkpoints", fed.PKI.Regulator, 200, []string{`id="checkpoint-signers" data-count="3"`}},
		{"https://" + auditAddr + "/", fed.PKI.Coordinator, 403, []string{"has the coordinator role"}},
	} {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsutil.ClientConfig(tc.as, pool, "127.0.0.1")}}
		resp, err := c.Get(tc.url)
		if err != nil {
			t.Fatalf("%s as %s: %v", tc.url, tc.as.ID, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s as %s: %d, want %d\n%s", tc.url, tc.as.ID, resp.StatusCode, tc.status, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s as %s: no %q in\n%s", tc.url, tc.as.ID, w, body)
			}
		}
	}
	// A client with no certificate, or a server from another CA, cannot
	// even see the page without the CA: the console is TLS 1.3 only.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, ServerName: "127.0.0.1"}}}
	if resp, err := c.Get("https://" + auditAddr + "/"); err == nil {
		resp.Body.Close()
		t.Error("a TLS 1.2 client was served")
	}
}

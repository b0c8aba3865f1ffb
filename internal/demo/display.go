package demo

import (
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fedledger/fedledger/coordinator"
)

// printRound prints one progress line per finished round.
func printRound(w io.Writer, total int, r coordinator.RoundReport) {
	if r.Failed {
		fmt.Fprintf(w, "round %2d/%d  FAILED: %s\n", r.Round, total, r.Reason)
		return
	}
	var acc, n float64
	sites := make([]string, 0, len(r.ParentTest))
	for site, m := range r.ParentTest {
		acc += m.Accuracy * float64(m.N)
		n += float64(m.N)
		sites = append(sites, site)
	}
	sort.Strings(sites)
	meanAcc := "   -  "
	if n > 0 {
		meanAcc = fmt.Sprintf("%.3f", acc/n)
	}
	bar := strings.Repeat("#", r.Round*20/max(total, 1)) + strings.Repeat(".", 20-r.Round*20/max(total, 1))
	fmt.Fprintf(w, "round %2d/%d [%s] %d updates  train loss %.4f  test acc of round's start model %s  %s  model %s\n",
		r.Round, total, bar, len(r.Contributors), r.TrainLoss, meanAcc, r.Duration.Round(time.Millisecond),
		hex.EncodeToString(r.Model[:])[:12])
	if len(r.Dropped) > 0 {
		fmt.Fprintf(w, "          dropped: %s\n", strings.Join(r.Dropped, ", "))
	}
	if len(r.Decryptors) > 0 {
		fmt.Fprintf(w, "          decrypted by: %s\n", strings.Join(r.Decryptors, ", "))
	}
}

// printTable prints per-hospital test accuracy of the models.
func printTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\nPer-hospital test accuracy (each hospital's own held-out 34%%):\n\n")
	_, personal := rep.MeanPersonal()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if personal {
		fmt.Fprintln(tw, "hospital\ttrain\ttest\tfederated\tpersonalised\talone\tpooled\t")
	} else {
		fmt.Fprintln(tw, "hospital\ttrain\ttest\tfederated\talone\tpooled\t")
	}
	for _, r := range rep.Rows {
		if personal {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", r.Hospital, r.Train, r.Test, r.Federated.Accuracy, r.Personal.Accuracy, r.Local.Accuracy, r.Pooled.Accuracy)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", r.Hospital, r.Train, r.Test, r.Federated.Accuracy, r.Local.Accuracy, r.Pooled.Accuracy)
		}
	}
	f, l, p := rep.MeanAccuracy()
	if pm, ok := rep.MeanPersonal(); ok {
		fmt.Fprintf(tw, "mean\t\t\t%.3f\t%.3f\t%.3f\t%.3f\t\n", f, pm, l, p)
	} else {
		fmt.Fprintf(tw, "mean\t\t\t%.3f\t%.3f\t%.3f\t\n", f, l, p)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nfederated: the final global model (the one on the audit log); alone: each hospital trains only on its own data;\n"+
		"pooled: one model trained on all hospitals' training data together (not possible in practice).\n")
	if personal {
		fmt.Fprintf(w, "personalised: each hospital's own model made from the global one, on its own data (it stays at the hospital).\n")
	}
	fmt.Fprintf(w, "final model sha256 %s   (%s)\n", hex.EncodeToString(rep.FinalModel[:]), rep.Elapsed.Round(time.Millisecond))
}

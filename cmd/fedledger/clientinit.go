package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/fsutil"
)

// dataOptionsHelp documents every data.csv key; `client --help` shows it and
// a test keeps it complete.
const dataOptionsHelp = `Data options (data.csv):
  path             the CSV export: a header row, then one row per patient
  label_column     the outcome column
  positive_labels  its values that count as positive (default ["1"]). Each
                   must occur in the column, and both classes must be present,
                   overall and in the training split, or the client refuses
                   to start
  numeric          columns parsed as numbers, or "all": every column that is
                   not the label, categorical or excluded, in header order
  categorical      columns one-hot encoded: levels sorted, one input per level
                   but the first
  exclude          with numeric: all, columns to leave out (ids, dates, text)
  missing          drop (default: skip a row with a missing value) or impute
                   (numeric: the column's mean; categorical: its own level)
  missing_tokens   values that mean missing (default ["", "?", "NA"]); a row
                   whose label is missing is always skipped
  test_fraction    share of the rows held out for evaluation (default 0.34)
  seed             seed of the shuffle that splits train and test (default 1)
  standardize      rescale every input with the training split's mean and
                   standard deviation (default true)

The study's model.inputs is the number of numeric columns plus, for each
categorical column, its number of levels minus one; every hospital must
arrive at the same inputs (same columns, same categories). The data
manifest hash the client signs with every update covers the file's SHA-256
and all of the above, with the resulting row counts and standardisation
statistics.`

func newClientInitCmd() *cobra.Command {
	var csvFile, label, missing, out string
	var positive []string
	cmd := &cobra.Command{
		Use:   "init --csv FILE [--label COLUMN] [--positive VALUE,...] [--out client.yaml]",
		Short: "Write a client's data section from its CSV export",
		Long: `Read a CSV export once (streaming), guess each column's type and write the
data section of a client configuration for it.

A column is numeric when every non-missing value is a number, categorical
otherwise; identifiers (a column named id, *_id or *ID whose values never
repeat), free text and empty columns are left out, with the reason. The
label column is --label (or a column named outcome, label, target,
diagnosis, class or y). The positive label is --positive, or guessed only
when it is evident (0/1, no/yes, false/true, negative/positive,
absent/present); otherwise init prints the label's values with their counts
and asks for --positive. It then loads the data exactly as the client will
(so a label mistake fails here) and prints model.inputs for the study.

With --out, the top-level data section of that existing client
configuration (the kit's client.yaml) is replaced and every other line kept;
the result must load, or nothing is written. Without --out the section is
printed to stdout, to paste; the summary goes to stderr.

Review what it wrote: the columns it chose are a guess from this hospital's
data, and every hospital of a study must encode the same inputs.`,
		Example: `  fedledger client init --csv export.csv --label diagnosis --positive malignant --out client.yaml
  fedledger client --config client.yaml --check`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if csvFile == "" {
				return fmt.Errorf("%w: client init needs --csv FILE", config.ErrConfig)
			}
			if missing != "drop" && missing != "impute" {
				return fmt.Errorf("%w: --missing %q, want drop or impute", config.ErrConfig, missing)
			}
			abs, err := filepath.Abs(csvFile)
			if err != nil {
				return fmt.Errorf("%w: --csv: %v", config.ErrConfig, err)
			}
			p, err := train.ProfileCSV(abs, nil)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			g, err := p.Guess(label, positive, missing)
			var q *train.LabelQuestion
			if errors.As(err, &q) {
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "label column %q of %s:\n", q.Column, csvFile)
				for _, v := range q.Values {
					fmt.Fprintf(w, "  %-20q %d rows\n", v.Value, v.Count)
				}
				return fmt.Errorf("%w: %s: label column %q: %s; name the positive values with --positive VALUE[,VALUE...]", config.ErrConfig, csvFile, q.Column, q.Reason)
			}
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			defaults := config.DefaultClientFile().Data.CSV
			c := g.Config
			c.TestFraction, c.Seed, c.Standardize = defaults.TestFraction, defaults.Seed, defaults.Standardize
			if c.MissingTokens == nil {
				c.MissingTokens = train.DefaultMissingTokens
			}
			tr, _, err := train.LoadCSV(c)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			prep := tr.Preprocessing

			summary := cmd.OutOrStdout()
			if out == "" {
				summary = cmd.ErrOrStderr()
			}
			fmt.Fprintf(summary, "%s: %d columns, %d rows\n", csvFile, len(p.Header), p.Rows)
			how := "given"
			if g.PositiveGuessed {
				how = "guessed from the values"
			}
			fmt.Fprintf(summary, "label %q: %s; positive: %s (%s)\n", c.LabelColumn, train.FormatCounts(p.Column(c.LabelColumn).Values, 12), quoteAll(c.PositiveLabels), how)
			for _, e := range g.Excluded {
				fmt.Fprintf(summary, "excluded %q: %s\n", e.Column, e.Reason)
			}
			if len(g.AddedTokens) > 0 {
				fmt.Fprintf(summary, "missing tokens: added %s, found in numeric columns\n", quoteAll(g.AddedTokens))
			}
			printPreprocessing(summary, prep)

			notes := []string{fmt.Sprintf("Written by `fedledger client init` from %s (%d rows); review it.", filepath.Base(csvFile), p.Rows)}
			for _, e := range g.Excluded {
				notes = append(notes, fmt.Sprintf("Left out %q: %s.", e.Column, e.Reason))
			}
			notes = append(notes, fmt.Sprintf("Model inputs: %d (the coordinator's study.model.inputs).", len(prep.Features())))
			section := config.DataSectionYAML(config.CSVFile{
				Path: c.Path, LabelColumn: c.LabelColumn, PositiveLabels: c.PositiveLabels, Numeric: c.Numeric, Categorical: c.Categorical,
				Missing: c.Missing, MissingTokens: c.MissingTokens, TestFraction: c.TestFraction, Seed: c.Seed, Standardize: c.Standardize,
			}, notes)
			if out == "" {
				_, err := io.WriteString(cmd.OutOrStdout(), section)
				return err
			}
			if err := spliceDataSection(out, section); err != nil {
				return err
			}
			fmt.Fprintf(summary, "wrote the data section of %s; check it with: fedledger client --config %s --check\n", out, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&csvFile, "csv", "", "the hospital's CSV export (header row first)")
	f.StringVar(&label, "label", "", "the outcome column (default: a column named outcome, label, target, diagnosis, class or y)")
	f.StringSliceVar(&positive, "positive", nil, "label values that count as positive (default: guessed only for 0/1, no/yes, false/true...)")
	f.StringVar(&missing, "missing", "drop", "missing values: drop (skip the row) or impute (column mean; own level)")
	f.StringVar(&out, "out", "", "existing client configuration whose data section to replace (default: print the section)")
	return cmd
}

// spliceDataSection replaces the data section of the client configuration
// at path, keeping its other lines and mode. The result is loaded with the
// real loader first; if it does not load, path is left as it was.
func spliceDataSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: --out: %v (it names the kit's client.yaml to update; without --out the section is printed)", config.ErrConfig, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	text := config.ReplaceDataSection(string(old), section)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".client-init-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(text)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if _, err := config.LoadClient(tmp.Name(), nil); err != nil {
		return fmt.Errorf("%w: %s with the new data section does not load, left unchanged: %v", config.ErrConfig, path, err)
	}
	return fsutil.WriteFileAtomic(path, []byte(text), fi.Mode().Perm())
}

// printPreprocessing writes what a load did: rows, split, columns, inputs.
func printPreprocessing(w io.Writer, p *train.Preprocessing) {
	r := p.Rows
	fmt.Fprintf(w, "rows: %d read, %d without a label, %d dropped for a missing value (missing: %s, tokens %s)\n",
		r.Read, r.NoLabel, r.Dropped, p.Missing, quoteAll(p.MissingTokens))
	fmt.Fprintf(w, "split: train %d (%d positive), test %d (%d positive); test_fraction %v, seed %d, standardize %v\n",
		r.Train, r.TrainPositive, r.Test, r.TestPositive, p.TestFraction, p.SplitSeed, p.Standardize)
	if p.Consortium {
		fmt.Fprintf(w, "standardised with the consortium's statistics (data.standardization), not this site's own\n")
	}
	num := p.ColumnsOf(train.KindNumeric)
	fmt.Fprintf(w, "numeric (%d): %s\n", len(num), strings.Join(num, ", "))
	var cats []string
	onehot := 0
	for _, c := range p.Columns {
		if c.Kind == train.KindCategorical {
			cats = append(cats, fmt.Sprintf("%s %s", c.Name, quoteAll(c.Categories)))
			onehot += len(c.Inputs())
		}
	}
	fmt.Fprintf(w, "categorical (%d): %s\n", len(cats), strings.Join(cats, ", "))
	fmt.Fprintf(w, "model inputs: %d (%d numeric + %d one-hot); the study needs model: {inputs: %d}\n",
		len(p.Features()), len(num), onehot, len(p.Features()))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// runClientCheck is `fedledger client --check`: load the configuration and
// the data as the client would at start, print what it loaded and the data
// manifest hash, and connect to nothing. A data error names the
// configuration file as well as the data file.
func runClientCheck(cmd *cobra.Command, cfgFile string, c *config.Client, logger *slog.Logger) error {
	cl, err := client.New(c.Config, logger)
	if err != nil {
		return fmt.Errorf("%w: %s: data: %v", config.ErrConfig, cfgFile, err)
	}
	s, err := cl.DataSummary()
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	studies := "any"
	if len(c.Config.Studies) > 0 {
		studies = strings.Join(c.Config.Studies, ", ")
	}
	fmt.Fprintf(w, "configuration ok: site %s, coordinator %s, audit nodes [%s], studies: %s\n",
		c.Identity.ID, c.Config.CoordinatorAddr, strings.Join(c.Config.AuditNodes, ", "), studies)
	fmt.Fprintf(w, "data: %s (file sha256 %s)\n", s.Source, s.FileSHA256)
	p := s.Preprocessing
	fmt.Fprintf(w, "label %q, positive %s\n", p.LabelColumn, quoteAll(p.PositiveLabels))
	printPreprocessing(w, p)
	fmt.Fprintf(w, "data manifest sha256: %x\n", s.ManifestSHA256)
	return nil
}

// Package anomaly flags unusual sites and rounds in a federated-learning
// study from per-site, per-round signals that the coordinator already sees:
// a site's declared update norm, the disclosed projection scalar of its
// encrypted update, the signed validation loss and accuracy it reports for
// the global model, its upload time, its refusals and retries, and so on.
//
// Three pieces are provided, all pure and deterministic (the only randomness
// is a seeded PCG generator):
//
//   - RobustZ scores every feature of an observation against the median and
//     the median absolute deviation (MAD) of that feature's history, pooled
//     over all sites, plus the current round's other sites. It is cheap,
//     explainable ("update_norm is 48 robust z from the median") and robust
//     to a minority of contaminated values.
//   - IsolationForest is the unsupervised multivariate detector of Liu, Ting
//     and Zhou (ICDM 2008). It catches combinations of values that are
//     individually plausible but jointly rare.
//   - Detector combines both over a sliding window of rounds, keeps the
//     history, and turns the results into Flags with a short reason.
//
// Missing signals are NaN. ±Inf is rejected as malformed input. Every error
// names the site, round, row or feature it concerns.
//
// The package only flags; deciding what to do with a flagged site (audit,
// down-weight, exclude) is left to the coordinator.
//
// Caveats:
//
//   - The robust z reference pools all sites, so it assumes enough sites
//     that honest between-site differences look like spread. With very few
//     sites, or two well-separated kinds of site (say, large and small
//     hospitals in equal numbers), the MAD measures within-group spread and
//     a whole group can be flagged. In the simulation (10 seeds, defaults),
//     3 sites gave 4.7% false positives and 5 sites 0.16%, against 0% for 10
//     and 50 sites.
//   - The window follows slow drift, but a step change shared by every site
//     (new model, new learning rate, new validation set) flags many sites
//     until the window catches up: start a new Detector at such a change.
//   - Flagged site-rounds enter the history. Median and MAD tolerate up to
//     half of the reference being bad; a coalition near half the sites, or
//     one site that is anomalous for most of the window in a tiny
//     federation, shifts the reference.
//   - Signals are self-declared. A site that keeps every signal inside the
//     honest sites' joint distribution is not flagged, and neither is a
//     deviation small relative to honest between-site spread: in the
//     simulation a ×3 norm was caught in 84% of malicious rounds, ×2 in 10%
//     and ×1.5 in 1%.
//   - The isolation forest splits on one feature at a time, so it is weak
//     on anomalies that only break a correlation between features (e.g. a
//     reported accuracy that contradicts the reported loss) when both
//     values are common on their own.
//
// The figures above come from the simulated federation in sim_test.go;
// TestSweep, which runs unless -short, reproduces them.
package anomaly

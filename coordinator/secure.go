package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	pb "github.com/fedledger/fedledger/proto"
)

// Secure mode at the coordinator. The coordinator never holds key material:
// at key setup it relays the participants' signed key shares and their
// sealed Shamir shares, and checks they all end with the same collective
// public key; in a round it adds ciphertexts and asks t key holders for
// decryption shares of the sum, over a manifest of the signed contributions
// they can check.

// Errors of secure mode.
var (
	ErrBadSignature = errors.New("coordinator: signature does not verify against the sender's certificate")
	ErrKeySetup     = errors.New("coordinator: key setup failed")
	ErrNotKeyHolder = errors.New("coordinator: client is not a key holder of this study")
	ErrBadShare     = errors.New("coordinator: malformed decryption share")
)

// Driver events of secure mode, posted by the gRPC handlers.
type (
	evKeyShare struct {
		client string
		cert   []byte // DER of the sender's verified certificate
		m      *pb.KeyShare
		share  mhe.PublicKeyGenShare
	}
	evShareBox struct {
		client string
		m      *pb.ShareBox
	}
	evKeyDone struct {
		client string
		m      *pb.KeySetupDone
	}
	evDecShare struct {
		client    string
		round     uint64
		aggregate [32]byte
		shares    []mhe.KeySwitchShare
		signed    audit.DecryptionShare
		reply     chan error
	}
)

// keyState is the study's public key material, as the coordinator knows it.
type keyState struct {
	preset  secure.Preset
	points  map[string]uint64 // participant -> Shamir point
	order   []string          // participants, sorted
	pk      *rlwe.PublicKey
	pkHash  [32]byte
	count   int // ciphertexts per contribution
	holders []string
}

// verifySig checks an Ed25519 signature by a peer's certificate key.
func verifySig(pub ed25519.PublicKey, msg, sig []byte, what string) error {
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("%w: %s", ErrBadSignature, what)
	}
	return nil
}

// keySetup runs the collective key generation among the clients connected
// now. Every one of them must finish it; a participant that leaves or
// refuses fails the study with the reason.
func (d *driver) keySetup(next func() (any, error)) error {
	st := d.cfg.Study
	preset, err := secure.LookupPreset(st.HEPreset)
	if err != nil {
		return err
	}
	ks := &keyState{preset: preset, points: map[string]uint64{}, order: sortedKeys(d.live)}
	if n := len(ks.order); n < st.Threshold || n < st.MinClients {
		return fmt.Errorf("%w: %d clients connected, the threshold t=%d and K=%d need more", ErrKeySetup, n, st.Threshold, st.MinClients)
	}
	if ks.count, err = secure.CiphertextCount(preset, st.Model.NumParams()); err != nil {
		return err
	}
	deadline := time.Now().Add(st.KeySetupTimeout)
	task := &pb.KeySetupTask{StudyId: st.ID, HePreset: preset.ID, CrsSeed: st.CRS(), Threshold: uint32(st.Threshold), DeadlineUnixNanos: deadline.UnixNano()}
	for i, id := range ks.order {
		ks.points[id] = uint64(i + 1)
		task.Participants = append(task.Participants, &pb.Participant{ClientId: id, Point: uint64(i + 1)})
	}
	d.log.Info("key setup started", slog.Any("participants", ks.order), slog.Int("threshold", st.Threshold),
		slog.String("he_preset", preset.ID), slog.String("crs_seed", hex.EncodeToString(task.CrsSeed)))
	start := time.Now()
	for _, id := range ks.order {
		d.live[id].push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_KeySetup{KeySetup: task}})
	}

	// wait runs the event loop until handle says the phase is done; a
	// participant leaving or refusing, or the deadline, fails key setup.
	wait := func(phase string, handle func(ev any) (bool, error)) error {
		for {
			ev, err := next()
			if err != nil {
				return err
			}
			switch e := ev.(type) {
			case Tick:
				if !e.Now.Before(deadline) {
					return fmt.Errorf("%w: deadline passed while %s", ErrKeySetup, phase)
				}
			case evLeft:
				if _, ok := ks.points[e.s.client]; ok {
					if _, still := d.live[e.s.client]; !still {
						return fmt.Errorf("%w: participant %q disconnected while %s", ErrKeySetup, e.s.client, phase)
					}
				}
			case evRefusal:
				if _, ok := ks.points[e.client]; ok {
					return fmt.Errorf("%w: participant %q refused: %s", ErrKeySetup, e.client, e.m.Reason)
				}
			case evUpdate:
				e.reply <- fmt.Errorf("%w: key setup is still running", ErrRoundClosed)
			default:
				done, err := handle(ev)
				if err != nil {
					return err
				}
				if done {
					return nil
				}
			}
		}
	}

	// Phase 1: one signed public-key share from every participant.
	shares := map[string]evKeyShare{}
	err = wait("collecting public-key shares", func(ev any) (bool, error) {
		e, ok := ev.(evKeyShare)
		if !ok {
			return false, nil
		}
		point, member := ks.points[e.client]
		switch {
		case !member:
			d.log.Warn("key share from a non-participant ignored", slog.String("client", e.client))
			return false, nil
		case e.m.StudyId != st.ID || e.m.Point != point:
			return false, fmt.Errorf("%w: %q sent a key share for %s point %d, it is point %d of %s", ErrKeySetup, e.client, e.m.StudyId, e.m.Point, point, st.ID)
		}
		if _, dup := shares[e.client]; !dup {
			shares[e.client] = e
		}
		return len(shares) == len(ks.order), nil
	})
	if err != nil {
		return err
	}
	pkShares := make([]mhe.PublicKeyGenShare, 0, len(ks.order))
	for _, id := range ks.order {
		pkShares = append(pkShares, shares[id].share)
	}
	if ks.pk, err = secure.CollectivePublicKey(preset, task.CrsSeed, pkShares); err != nil {
		return err
	}
	if ks.pkHash, err = secure.PublicKeyHash(ks.pk); err != nil {
		return err
	}
	// Every participant gets every participant's signed share and
	// certificate, checks them, computes the key itself, and seals its
	// Shamir shares to the others' X25519 keys.
	for _, to := range ks.order {
		for _, from := range ks.order {
			d.live[to].push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_PeerKey{PeerKey: &pb.PeerKey{
				ClientId: from, Certificate: shares[from].cert, Share: shares[from].m,
			}}})
		}
	}

	// Phase 2: relay the sealed Shamir shares, then wait for every
	// participant to confirm the same collective key.
	byPoint := map[uint64]string{}
	for id, p := range ks.points {
		byPoint[p] = id
	}
	relayed := map[[2]uint64]bool{}
	done := map[string]bool{}
	err = wait("exchanging Shamir shares", func(ev any) (bool, error) {
		switch e := ev.(type) {
		case evShareBox:
			from, member := ks.points[e.client]
			to, ok := byPoint[e.m.ToPoint]
			switch {
			case !member:
				return false, nil
			case e.m.StudyId != st.ID || e.m.FromPoint != from || !ok || to == e.client:
				return false, fmt.Errorf("%w: %q sent a share box from point %d to point %d; it is point %d", ErrKeySetup, e.client, e.m.FromPoint, e.m.ToPoint, from)
			case relayed[[2]uint64{from, e.m.ToPoint}]:
				return false, fmt.Errorf("%w: %q sent two share boxes for point %d", ErrKeySetup, e.client, e.m.ToPoint)
			}
			relayed[[2]uint64{from, e.m.ToPoint}] = true
			d.live[to].push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_ShareBox{ShareBox: e.m}})
		case evKeyDone:
			if _, member := ks.points[e.client]; !member {
				return false, nil
			}
			if e.m.StudyId != st.ID || !slices.Equal(e.m.CollectiveKeySha256, ks.pkHash[:]) {
				return false, fmt.Errorf("%w: %q computed collective key %x, the coordinator %x", ErrKeySetup, e.client, e.m.CollectiveKeySha256, ks.pkHash[:8])
			}
			done[e.client] = true
		}
		return len(done) == len(ks.order), nil
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.keys = ks
	d.mu.Unlock()
	d.metrics.keySetupSeconds.Set(time.Since(start).Seconds())
	d.log.Info("key setup done", slog.String("collective_key", hex.EncodeToString(ks.pkHash[:])), slog.Int("participants", len(ks.order)),
		slog.Int("threshold", st.Threshold), slog.Duration("took", time.Since(start)))
	return nil
}

// secureAggregate sums the round's ciphertexts, asks t live key holders for
// decryption shares over a manifest of the signed contributions, decrypts
// the sum, divides by the decrypted total weight and applies the server
// optimiser. A round whose decryption cannot finish fails; the study goes
// on from the same parent.
func (d *driver) secureAggregate(ctx context.Context, round *Round, a Aggregate, rep RoundReport, start time.Time, log *slog.Logger, next func() (any, error)) (RoundReport, error) {
	st, ks := d.cfg.Study, d.keys
	r := uint64(rep.Round)
	fail := func(reason string) (RoundReport, error) {
		return d.failRound(round, rep, reason, start, log), nil
	}
	t0 := time.Now()
	parts := make([][]*rlwe.Ciphertext, 0, len(a.Updates))
	manifest := make([]*pb.Contribution, 0, len(a.Updates))
	var signed []audit.Contribution
	var weight uint64
	for _, u := range a.Updates {
		cts, err := secure.OpenCiphertexts(u.Payload, secure.Expect{Kind: secure.KindContribution, Preset: ks.preset, Study: st.ID, Round: r, Count: uint32(ks.count)})
		if err != nil {
			return rep, fmt.Errorf("coordinator: accepted update of %s no longer opens: %w", u.Client, err)
		}
		if _, err := d.cts.Put(u.Payload); err != nil {
			return rep, err
		}
		parts = append(parts, cts)
		h := d.headers[u.Client]
		manifest = append(manifest, &pb.Contribution{ClientId: u.Client, Sha256: u.Hash[:], Size: uint64(len(u.Payload)), Signature: h.GetSignature(),
			Samples: u.Weight, DataManifestSha256: h.GetDataManifestSha256()})
		signed = append(signed, audit.Contribution{Site: u.Client, UpdateHash: u.Hash, Samples: u.Weight, DataManifest: [32]byte(h.GetDataManifestSha256()), Signature: h.GetSignature()})
		weight += u.Weight
	}
	sum, err := secure.Sum(ks.preset, parts)
	if err != nil {
		return rep, err
	}
	aggPayload, err := secure.SealPayload(secure.KindAggregate, ks.preset, st.ID, r, sum)
	if err != nil {
		return rep, err
	}
	aggHash, err := d.cts.Put(aggPayload)
	if err != nil {
		return rep, err
	}
	d.metrics.phaseSeconds.WithLabelValues("aggregate").Observe(time.Since(t0).Seconds())

	// Active set: t live key holders, contributors first.
	var active []string
	for _, pass := range [][]string{round.Contributors(), ks.order} {
		for _, id := range pass {
			if _, live := d.live[id]; live && len(active) < st.Threshold && !slices.Contains(active, id) {
				active = append(active, id)
			}
		}
	}
	if len(active) < st.Threshold {
		return fail(fmt.Sprintf("only %d key holders online, decryption needs t=%d", len(active), st.Threshold))
	}
	slices.Sort(active)
	points := make([]uint64, len(active))
	for i, id := range active {
		points[i] = ks.points[id]
	}
	deadline := time.Now().Add(st.RoundDeadline)
	task := &pb.DecryptTask{StudyId: st.ID, Round: r, ActivePoints: points, Contributions: manifest,
		AggregateSha256: aggHash[:], AggregateSize: uint64(len(aggPayload)), DeadlineUnixNanos: deadline.UnixNano(), ParentSha256: d.parent[:]}
	d.mu.Lock()
	d.decrypt = &openDecryption{round: r, aggregate: aggHash, manifest: audit.ManifestDigest(st.ID, r, audit.Hash(d.parent), signed)}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.decrypt = nil
		d.mu.Unlock()
	}()
	for _, id := range active {
		d.live[id].push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Decrypt{Decrypt: task}})
	}
	log.Info("decryption requested", slog.Any("active", active), slog.String("aggregate", hex.EncodeToString(aggHash[:8])))
	t1 := time.Now()

	got := map[string][]mhe.KeySwitchShare{}
	signedShares := map[string]audit.DecryptionShare{}
	d.setStatus(func(s *pb.StudyStatus) { s.Phase = PhaseDecrypting })
	d.decrypting = true
	defer func() { d.decrypting = false }()
	for len(got) < len(active) {
		ev, err := next()
		if err != nil {
			return rep, err
		}
		switch e := ev.(type) {
		case Tick:
			if !e.Now.Before(deadline) {
				return fail(fmt.Sprintf("decryption deadline passed with %d of the %d shares", len(got), len(active)))
			}
		case evLeft:
			if _, still := d.live[e.s.client]; !still && slices.Contains(active, e.s.client) && got[e.s.client] == nil {
				return fail(fmt.Sprintf("decryptor %q disconnected before giving its share", e.s.client))
			}
		case evRefusal:
			if slices.Contains(active, e.client) && e.m.Round == r {
				return fail(fmt.Sprintf("decryptor %q refused: %s", e.client, e.m.Reason))
			}
		case evUpdate:
			e.reply <- fmt.Errorf("%w: round %d is decrypting", ErrRoundClosed, r)
		case evDecShare:
			switch {
			case !slices.Contains(active, e.client):
				e.reply <- fmt.Errorf("%w: %q is not in round %d's active set", ErrNotAssigned, e.client, r)
			case e.round != r:
				e.reply <- fmt.Errorf("%w: decryption share for round %d, this is round %d", ErrWrongRound, e.round, r)
			case e.aggregate != aggHash:
				e.reply <- fmt.Errorf("%w: decryption share of aggregate %x, round %d decrypts %x", ErrBadUpdate, e.aggregate[:6], r, aggHash[:6])
			case got[e.client] != nil:
				e.reply <- fmt.Errorf("%w: %q already gave its share", ErrDuplicate, e.client)
			default:
				got[e.client] = e.shares
				signedShares[e.client] = e.signed
				e.reply <- nil
				log.Info("decryption share accepted", slog.String("client", e.client), slog.Int("have", len(got)), slog.Int("need", len(active)))
			}
		}
	}
	d.metrics.phaseSeconds.WithLabelValues("decryption_shares").Observe(time.Since(t1).Seconds())
	t2 := time.Now()
	shareList := make([][]mhe.KeySwitchShare, 0, len(active))
	for _, id := range active {
		shareList = append(shareList, got[id])
	}
	dim := st.Model.NumParams()
	vec, total, err := secure.Decrypt(ks.preset, sum, shareList, st.Threshold, dim)
	if err != nil {
		return fail(fmt.Sprintf("combining decryption shares: %v", err))
	}
	// The decrypted total weight must be the sum of the sample counts the
	// contributors declared: a cheap end-to-end check of the decryption.
	if math.Abs(total-float64(weight)) > 0.5 {
		return fail(fmt.Sprintf("decrypted total weight %.3f, contributors declared %d", total, weight))
	}
	for i := range vec {
		vec[i] /= total
	}
	d.metrics.phaseSeconds.WithLabelValues("combine").Observe(time.Since(t2).Seconds())
	nextParams, err := d.opt.Step(d.params, vec)
	if err != nil {
		return rep, err
	}
	rep.Decryptors, rep.AggregateHash = active, aggHash
	for _, id := range active {
		rep.DecryptionShares = append(rep.DecryptionShares, signedShares[id])
	}
	return d.finishAggregate(round, a, rep, nextParams, start, log)
}

// checkSecureUpdate checks a secure update payload: exactly the envelopes
// of the study's preset for its round. (The contribution signature is
// checked for every update, in either mode, by receiveUpdate.)
func (c *Coordinator) checkSecureUpdate(study string, round uint64, payload []byte) error {
	ks := c.keySnapshot()
	if ks == nil {
		return fmt.Errorf("%w: key setup has not finished", ErrRoundClosed)
	}
	if _, err := secure.OpenCiphertexts(payload, secure.Expect{Kind: secure.KindContribution, Preset: ks.preset, Study: study, Round: round, Count: uint32(ks.count)}); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	return nil
}

// openDecryption is the decryption a secure round has open: the shares it
// takes are signed over this round, aggregate and manifest digest.
type openDecryption struct {
	round     uint64
	aggregate [32]byte
	manifest  audit.Hash
}

// decryptionManifest returns the manifest digest of the decryption open
// for round and aggregate.
func (c *Coordinator) decryptionManifest(round uint64, aggregate [32]byte) (audit.Hash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.decrypt == nil || c.decrypt.round != round || c.decrypt.aggregate != aggregate {
		return audit.Hash{}, false
	}
	return c.decrypt.manifest, true
}

// keySnapshot returns the finished key state, or nil.
func (c *Coordinator) keySnapshot() *keyState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys
}

// contributionSize is the exact payload size of a secure update.
func (ks *keyState) contributionSize(study string) int64 {
	n, _ := secure.PayloadSize(secure.KindContribution, ks.preset, study, ks.count)
	return n
}

// shareSize is the exact payload size of one party's decryption shares.
func (ks *keyState) shareSize(study string) int64 {
	n, _ := secure.PayloadSize(secure.KindDecryptionShare, ks.preset, study, ks.count)
	return n
}

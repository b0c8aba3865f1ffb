package coordinator

import (
	"github.com/fedledger/fedledger/coordinator/study"
	pb "github.com/fedledger/fedledger/proto"
)

// send delivers a study machine's message to a connected site; a site
// that is not connected misses it (the machine counts it as silent).
func (c *Coordinator) send(s study.Send) {
	c.mu.Lock()
	sess := c.sessions[s.To]
	c.mu.Unlock()
	if sess == nil {
		return
	}
	if keys, ok := s.Msg.(study.PeerKeys); ok {
		// One message per participant's key share on the wire.
		for _, k := range keys.Keys {
			sess.push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_PeerKey{PeerKey: &pb.PeerKey{ClientId: k.Site, Certificate: k.Cert,
				Share: &pb.KeyShare{StudyId: c.cfg.Study.ID, Point: k.Point, X25519Public: k.X25519, PkShare: k.PkShare, Signature: k.Signature}}}})
		}
		return
	}
	if m := c.message(s.Msg); m != nil {
		sess.push(m)
	}
}

func object(o study.Object) *pb.Object {
	if o.Hash == ([32]byte{}) {
		return nil
	}
	return &pb.Object{Sha256: o.Hash[:], Size: o.Size}
}

func contributions(cs []study.Contribution) []*pb.Contribution {
	out := make([]*pb.Contribution, 0, len(cs))
	for _, c := range cs {
		out = append(out, &pb.Contribution{ClientId: c.Site, Sha256: c.UpdateHash[:], Size: c.Size, Signature: c.Signature,
			Samples: c.Samples, DataManifestSha256: c.DataManifest[:]})
	}
	return out
}

// message maps a machine message to the wire.
func (c *Coordinator) message(msg any) *pb.CoordinatorMessage {
	id := c.cfg.Study.ID
	switch m := msg.(type) {
	case study.TrainTask:
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Train{Train: &pb.TrainTask{
			StudyId: id, Round: m.Round, ParentSha256: m.Parent.Hash[:], ParentSize: m.Parent.Size, DeadlineUnixNanos: m.Deadline.UnixNano()}}}
	case study.KeySetupTask:
		t := &pb.KeySetupTask{StudyId: id, HePreset: c.cfg.Study.HEPreset, CrsSeed: c.cfg.Study.CRS(), Threshold: uint32(c.cfg.Study.Threshold),
			DeadlineUnixNanos: m.Deadline.UnixNano()}
		for _, p := range m.Participants {
			t.Participants = append(t.Participants, &pb.Participant{ClientId: p.Site, Point: p.Point})
		}
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_KeySetup{KeySetup: t}}
	case study.ShareBox:
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_ShareBox{ShareBox: &pb.ShareBox{StudyId: id, FromPoint: m.From, ToPoint: m.To, Box: m.Box}}}
	case study.SketchTask:
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Sketch{Sketch: &pb.SketchTask{
			StudyId: id, Round: m.Round, ParentSha256: m.Parent[:], Contributions: contributions(m.Contributions),
			AggregateSha256: m.Aggregate.Hash[:], DeadlineUnixNanos: m.Deadline.UnixNano()}}}
	case study.BoundTask:
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Bound{Bound: &pb.BoundTask{
			StudyId: id, Round: m.Round, ParentSha256: m.Parent.Hash[:], Contributions: contributions(m.Contributions),
			ActivePoints: m.Active, DeadlineUnixNanos: m.Deadline.UnixNano(), Parent: object(m.Parent), Initial: object(c.initial)}}}
	case study.DecryptTask:
		t := &pb.DecryptTask{
			StudyId: id, Round: m.Round, ActivePoints: m.Active, Contributions: contributions(m.Contributions),
			AggregateSha256: m.Aggregate.Hash[:], AggregateSize: m.Aggregate.Size, DeadlineUnixNanos: m.Deadline.UnixNano(), ParentSha256: m.Parent[:]}
		for _, s := range m.Sketches {
			t.Sketches = append(t.Sketches, &pb.ContributionSketch{StudyId: id, Round: m.Round, ClientId: s.Site, AggregateSha256: m.Aggregate.Hash[:],
				Values: s.Values, Signature: s.Signature})
		}
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Decrypt{Decrypt: t}}
	case study.CountersignTask:
		t := &pb.CountersignTask{StudyId: id, Round: m.Round, Parent: object(m.Parent), Contributions: contributions(m.Contributions),
			Aggregate: object(m.Aggregate), OptimizerBefore: object(m.OptimizerBefore), OptimizerAfter: object(m.OptimizerAfter),
			Output: object(m.Output), DeadlineUnixNanos: m.Deadline.UnixNano()}
		for _, s := range m.Shares {
			t.Shares = append(t.Shares, &pb.SignedShare{ClientId: s.Share.Site, Payload: &pb.Object{Sha256: s.Share.ShareHash[:], Size: s.Size},
				Signature: s.Share.Signature})
		}
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Countersign{Countersign: t}}
	case study.EvaluateTask:
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Evaluate{Evaluate: &pb.EvaluateTask{
			StudyId: id, Round: m.Round, ModelSha256: m.Model.Hash[:], ModelSize: m.Model.Size}}}
	case study.Finished:
		f := &pb.StudyFinished{StudyId: id, RoundsCompleted: uint64(m.Rounds), Failure: m.Failure}
		if m.Model != ([32]byte{}) {
			f.FinalModelSha256 = m.Model[:]
		}
		return &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: f}}
	}
	return nil
}

package coordinator

import pb "github.com/fedledger/fedledger/proto"

// Status is the study's status as StudyAdmin.Status reports it to admins
// and observers, for readers in the same process (the web console,
// internal/console). It keeps answering after Run has returned, from the
// last state the study reached.
func (c *Coordinator) Status() *pb.StudyStatus { return c.statusProto() }

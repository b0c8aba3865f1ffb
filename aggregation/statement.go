package aggregation

import "encoding/binary"

// Contribution is what a hospital signs, with its certificate key, for each
// update it sends, in plaintext and in secure mode alike: the study and
// round, the SHA-256 of the update payload exactly as sent, the number of
// training samples behind it, and the SHA-256 of its data manifest (the
// digests of the files it trained on and the row counts after filtering).
// The coordinator checks the signature on receipt, lists it in the
// decryption manifest (so decryptors can check it too) and on the audit
// log.
type Contribution struct {
	Study        string
	Round        uint64
	Payload      [32]byte
	Samples      uint64
	DataManifest [32]byte
}

// Message is the domain-separated byte string that is signed.
func (c Contribution) Message() []byte {
	msg := []byte("fedledger contribution v2\x00" + c.Study + "\x00")
	msg = binary.BigEndian.AppendUint64(msg, c.Round)
	msg = append(msg, c.Payload[:]...)
	msg = binary.BigEndian.AppendUint64(msg, c.Samples)
	return append(msg, c.DataManifest[:]...)
}

package iscsi

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func targetPrefs() Params {
	p := DefaultParams()
	p.HeaderDigest, p.DataDigest = true, true
	p.InitialR2T = false
	p.MaxRecvDataSegmentLength = 262144
	p.MaxBurstLength = 1 << 20
	p.FirstBurstLength = 262144
	p.MaxOutstandingR2T = 4
	return p
}

func TestNegotiatorAnswers(t *testing.T) {
	n := NewNegotiator(targetPrefs())
	for _, c := range []struct{ key, offer, want string }{
		{"HeaderDigest", "CRC32C,None", "CRC32C"},
		{"DataDigest", "None,CRC32C", "None"},
		{"MaxConnections", "4", "1"},
		{"InitialR2T", "No", "No"},
		{"ImmediateData", "Yes", "Yes"},
		{"MaxRecvDataSegmentLength", "65536", "262144"},
		{"MaxBurstLength", "16776192", "1048576"},
		{"FirstBurstLength", "0x2000", "8192"},
		{"DefaultTime2Wait", "0", "2"},
		{"DefaultTime2Retain", "0", "0"},
		{"MaxOutstandingR2T", "16", "4"},
		{"DataPDUInOrder", "No", "Yes"},
		{"DataSequenceInOrder", "Yes", "Yes"},
		{"ErrorRecoveryLevel", "2", "0"},
		{"OFMarker", "No", "No"},
		{"IFMarkInt", "2048~8192", "Reject"},
		{"X-com.example.Thing", "1", "NotUnderstood"},
	} {
		got, err := n.Answer(c.key, c.offer)
		require.NoError(t, err, c.key)
		assert.Equal(t, c.want, got, "%s=%s", c.key, c.offer)
	}
	p := n.Finish()
	assert.True(t, p.HeaderDigest)
	assert.False(t, p.DataDigest)
	assert.False(t, p.InitialR2T)
	assert.Equal(t, uint32(65536), p.PeerMaxRecvDataSegmentLength)
	assert.Equal(t, uint32(262144), p.MaxRecvDataSegmentLength)
	assert.Equal(t, uint32(1<<20), p.MaxBurstLength)
	assert.Equal(t, uint32(8192), p.FirstBurstLength)
	assert.Equal(t, uint32(4), p.MaxOutstandingR2T)
	assert.Equal(t, uint32(0), p.ErrorRecoveryLevel)

	_, err := n.Answer("MaxBurstLength", "512")
	var ne *NegotiationError
	require.ErrorAs(t, err, &ne, "a key offered twice fails the login")
	assert.Equal(t, LoginInitiatorError, ne.Status)
}

func TestNegotiatorRejectsIllegalValues(t *testing.T) {
	n := NewNegotiator(targetPrefs())
	for _, c := range []struct{ key, offer string }{
		{"MaxRecvDataSegmentLength", "100"},
		{"MaxBurstLength", "16777216"},
		{"MaxConnections", "0"},
		{"InitialR2T", "maybe"},
		{"ErrorRecoveryLevel", "3"},
		{"HeaderDigest", "MD5"},
		{"DefaultTime2Wait", "-1"},
	} {
		got, err := n.Answer(c.key, c.offer)
		require.NoError(t, err, c.key)
		assert.Equal(t, ValueReject, got, "%s=%s", c.key, c.offer)
	}
	_, err := n.Answer("DataDigest", "NotUnderstood")
	assert.Error(t, err)
}

// Without CRC32C support, a digest offer of CRC32C alone is rejected and
// the outcome is no digest.
func TestNegotiatorDigestWithoutSupport(t *testing.T) {
	prefs := DefaultParams()
	n := NewNegotiator(prefs)
	got, err := n.Answer("HeaderDigest", "CRC32C")
	require.NoError(t, err)
	assert.Equal(t, ValueReject, got)
	assert.False(t, n.Finish().HeaderDigest)
}

func TestNegotiatorDiscovery(t *testing.T) {
	n := NewNegotiator(targetPrefs())
	n.Discovery = true
	got, err := n.Answer("MaxBurstLength", "262144")
	require.NoError(t, err)
	assert.Equal(t, ValueIrrelevant, got)
	got, err = n.Answer("MaxRecvDataSegmentLength", "8192")
	require.NoError(t, err)
	assert.Equal(t, "262144", got)
}

func TestFinishClampsFirstBurst(t *testing.T) {
	prefs := targetPrefs()
	n := NewNegotiator(prefs)
	_, err := n.Answer("MaxBurstLength", "4096")
	require.NoError(t, err)
	p := n.Finish()
	assert.Equal(t, uint32(4096), p.FirstBurstLength, "FirstBurstLength never exceeds MaxBurstLength")
	assert.Equal(t, prefs.MaxRecvDataSegmentLength, p.MaxRecvDataSegmentLength)
	assert.Equal(t, uint32(8192), p.PeerMaxRecvDataSegmentLength, "the default when the initiator declares nothing")
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct{ key, offer, answer string }{
		{"MaxBurstLength", "262144", "65536"},
		{"DefaultTime2Wait", "2", "5"},
		{"InitialR2T", "No", "Yes"},
		{"ImmediateData", "Yes", "No"},
		{"HeaderDigest", "CRC32C,None", "None"},
		{"MaxBurstLength", "262144", "Reject"},
	} {
		got, err := Outcome(c.key, c.offer, c.answer)
		require.NoError(t, err, "%s=%s answered %s", c.key, c.offer, c.answer)
		assert.Equal(t, c.answer, got)
	}
	for _, c := range []struct{ key, offer, answer string }{
		{"MaxBurstLength", "65536", "262144"},
		{"DefaultTime2Wait", "5", "2"},
		{"InitialR2T", "Yes", "No"},
		{"ImmediateData", "No", "Yes"},
		{"HeaderDigest", "None", "CRC32C"},
		{"MaxBurstLength", "65536", "lots"},
		{"NoSuchKey", "1", "1"},
	} {
		_, err := Outcome(c.key, c.offer, c.answer)
		assert.Error(t, err, "%s=%s answered %s", c.key, c.offer, c.answer)
	}
}

func TestNegotiatorRequireDigests(t *testing.T) {
	n := NewNegotiator(targetPrefs())
	n.RequireHeaderDigest, n.RequireDataDigest = true, true
	got, err := n.Answer("HeaderDigest", "None,CRC32C")
	require.NoError(t, err)
	assert.Equal(t, "CRC32C", got, "the first offered value the responder allows")
	_, err = n.Answer("DataDigest", "None")
	var ne *NegotiationError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, ne.Error(), "requires CRC32C")
}

func TestSBCTransferLength(t *testing.T) {
	for _, c := range []struct {
		cdb  []byte
		want int
		ok   bool
	}{
		{[]byte{0x08, 0, 0, 0, 0, 0}, 256 * 512, true},
		{[]byte{0x0a, 0, 0, 0, 3, 0}, 3 * 512, true},
		{[]byte{0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0}, 1024, true},
		{[]byte{0x2e, 0, 0, 0, 0, 0, 0, 1, 0, 0}, 256 * 512, true},
		{[]byte{0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0}, 2048, true},
		{[]byte{0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, 4096, true},
		{[]byte{0x2f, 0, 0, 0, 0, 0, 0, 0, 2, 0}, 0, true},                     // VERIFY without BYTCHK
		{[]byte{0x2f, 2, 0, 0, 0, 0, 0, 0, 2, 0}, 1024, true},                  // BYTCHK=01
		{[]byte{0x8f, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0}, 512, true}, // BYTCHK=11
		{[]byte{0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, 1024, true},
		{[]byte{0x41, 0, 0, 0, 0, 0, 0, 0, 9, 0}, 512, true},
		{[]byte{0x93, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0}, 0, true}, // NDOB
		{[]byte{0x12, 0, 0, 0, 96, 0}, 0, false},
		{[]byte{0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}, 0, false}, // too long to hold
		{[]byte{0x28, 0, 0}, 0, false},
	} {
		n, ok := SBCTransferLength(c.cdb, 512)
		assert.Equal(t, c.ok, ok, "% x", c.cdb)
		assert.Equal(t, c.want, n, "% x", c.cdb)
	}
}

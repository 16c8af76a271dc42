package iscsi

import (
	"crypto/md5"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCHAPResponse(t *testing.T) {
	challenge := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	want := md5.Sum(append(append([]byte{0x2a}, "secret"...), challenge...))
	assert.Equal(t, want[:], CHAPResponse(0x2a, "secret", challenge), "MD5(identifier || secret || challenge), RFC 1994")
	assert.True(t, chapVerify(0x2a, "secret", challenge, want[:]))
	assert.False(t, chapVerify(0x2b, "secret", challenge, want[:]))
	assert.False(t, chapVerify(0x2a, "secreT", challenge, want[:]))
	assert.False(t, chapVerify(0x2a, "secret", challenge, want[:15]))

	id, c := newChallenge()
	id2, c2 := newChallenge()
	assert.Len(t, c, chapChallengeLen)
	assert.False(t, id == id2 && string(c) == string(c2), "challenges are random")
}

func TestCHAPBinary(t *testing.T) {
	b, err := DecodeCHAPBinary("0x0102ff")
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 0xff}, b)
	b, err = DecodeCHAPBinary("0x102") // odd length: a leading zero nibble
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2}, b)
	b, err = DecodeCHAPBinary("0bAQL/")
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 0xff}, b)
	assert.Equal(t, "0x0102ff", EncodeCHAPBinary([]byte{1, 2, 0xff}))
	for _, bad := range []string{"0102", "0xzz", "0b***", ""} {
		_, err := DecodeCHAPBinary(bad)
		assert.Error(t, err, bad)
	}
}

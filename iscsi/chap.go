package iscsi

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// CHAP with MD5 (RFC 1994, RFC 7143 12.1.3): the response is
// MD5(identifier || secret || challenge).

// CHAPAlgorithmMD5 is the CHAP_A value of MD5, the one algorithm offered.
const CHAPAlgorithmMD5 = "5"

// chapChallengeLen is the length of the challenges this target sends.
const chapChallengeLen = 16

// CHAPResponse computes the CHAP response of id, secret and challenge.
func CHAPResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// EncodeCHAPBinary writes a binary CHAP value as 0x-prefixed hex.
func EncodeCHAPBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }

// DecodeCHAPBinary reads a binary CHAP value: 0x hex or 0b base64 (RFC 7143
// 6.1 binary-value).
func DecodeCHAPBinary(s string) ([]byte, error) {
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		h := s[2:]
		if len(h)%2 == 1 {
			h = "0" + h
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("CHAP value %.20q... is not valid hex", s)
		}
		return b, nil
	case strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0B"):
		b, err := base64.StdEncoding.DecodeString(s[2:])
		if err != nil {
			return nil, fmt.Errorf("CHAP value %.20q... is not valid base64", s)
		}
		return b, nil
	}
	return nil, fmt.Errorf("CHAP value %.20q... is neither 0x-hex nor 0b-base64", s)
}

// newChallenge returns a random identifier and challenge.
func newChallenge() (byte, []byte) {
	b := make([]byte, chapChallengeLen+1)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return b[0], b[1:]
}

// chapVerify checks an initiator's response in constant time.
func chapVerify(id byte, secret string, challenge, response []byte) bool {
	want := CHAPResponse(id, secret, challenge)
	return subtle.ConstantTimeCompare(want, response) == 1
}

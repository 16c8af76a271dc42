package iscsi

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// KV is one key=value pair of a text or login data segment.
type KV struct {
	Key   string
	Value string
}

// Text is the ordered list of key=value pairs of a text or login exchange.
type Text []KV

// Limits of the text format (RFC 7143 6.1): a key name is at most 63
// bytes; a value is at most 255 bytes, or 8192 for the few keys that allow
// a long value (and for CHAP binary values).
const (
	MaxKeyLen   = 63
	MaxValueLen = 8192
)

// TextError is a malformed data segment of a text or login PDU.
type TextError struct {
	Offset int
	Reason string
}

func (e *TextError) Error() string {
	return fmt.Sprintf("iscsi: malformed key=value text at byte %d: %s", e.Offset, e.Reason)
}

// ParseText splits a data segment of NUL-terminated key=value pairs. A key
// may appear once; a trailing pair without its NUL is accepted (some
// initiators omit the last one); any other form is a TextError.
func ParseText(data []byte) (Text, error) {
	var t Text
	off := 0
	for off < len(data) {
		end := bytes.IndexByte(data[off:], 0)
		var pair []byte
		if end < 0 {
			pair = data[off:]
		} else {
			pair = data[off : off+end]
		}
		if len(pair) == 0 {
			// NUL padding after the last pair.
			if bytes.Count(data[off:], []byte{0}) == len(data)-off {
				break
			}
			return nil, &TextError{Offset: off, Reason: "empty key=value pair"}
		}
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 {
			return nil, &TextError{Offset: off, Reason: fmt.Sprintf("%q has no '='", clip(pair))}
		}
		key, val := pair[:eq], pair[eq+1:]
		if err := checkKey(key); err != nil {
			return nil, &TextError{Offset: off, Reason: err.Error()}
		}
		if len(val) > MaxValueLen {
			return nil, &TextError{Offset: off, Reason: fmt.Sprintf("value of %s is %d bytes, more than %d", key, len(val), MaxValueLen)}
		}
		k := string(key)
		if _, dup := t.Get(k); dup {
			return nil, &TextError{Offset: off, Reason: fmt.Sprintf("key %s appears twice", k)}
		}
		t = append(t, KV{Key: k, Value: string(val)})
		off += len(pair) + 1
	}
	return t, nil
}

func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// checkKey enforces the key name syntax: 1..63 characters of letters,
// digits, '.', '-', '+', '@', '_'.
func checkKey(k []byte) error {
	if len(k) == 0 {
		return fmt.Errorf("empty key name")
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("key name %q... is %d bytes, more than %d", clip(k), len(k), MaxKeyLen)
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_':
		default:
			return fmt.Errorf("key name %q has the character %q, not allowed in a key", clip(k), c)
		}
	}
	return nil
}

// Get returns the value of key.
func (t Text) Get(key string) (string, bool) {
	for _, kv := range t {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Add appends key=value.
func (t *Text) Add(key, value string) { *t = append(*t, KV{key, value}) }

// Marshal returns the data segment of t.
func (t Text) Marshal() []byte { return t.Append(nil) }

// Append appends t's key=value pairs, each NUL-terminated, to dst.
func (t Text) Append(dst []byte) []byte {
	for _, kv := range t {
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// String prints t as key=value pairs separated by spaces (for logs and
// test failures).
func (t Text) String() string {
	var b strings.Builder
	for i, kv := range t {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
	}
	return b.String()
}

// Special values of the text format.
const (
	ValueNotUnderstood = "NotUnderstood"
	ValueIrrelevant    = "Irrelevant"
	ValueReject        = "Reject"
)

// ParseNumber reads a numerical value: decimal, or hexadecimal with 0x.
// Values of iSCSI numerical keys fit in 32 bits.
func ParseNumber(s string) (uint32, error) {
	base := 10
	digits := s
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		base, digits = 16, h
	} else if h, ok := strings.CutPrefix(s, "0X"); ok {
		base, digits = 16, h
	}
	if digits == "" || digits[0] == '+' || digits[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	v, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 32-bit number", s)
	}
	return uint32(v), nil
}

// ParseBool reads Yes or No.
func ParseBool(s string) (bool, error) {
	switch s {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("%q is neither Yes nor No", s)
}

// FormatBool writes Yes or No.
func FormatBool(v bool) string {
	if v {
		return "Yes"
	}
	return "No"
}

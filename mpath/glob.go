package mpath

import (
	"path"
	"strings"
)

// Glob matches s against a case-insensitive glob pattern (path.Match
// syntax: *, ?, [a-z]); the empty pattern matches anything. SCSI identity
// strings are space padded: trailing spaces of s do not count. Claim
// rules, SATP rules and every other vendor/model/name pattern use it.
func Glob(pattern, s string) bool {
	if pattern == "" || pattern == "*" {
		return true
	}
	ok, err := path.Match(strings.ToUpper(pattern), strings.ToUpper(strings.TrimRight(s, " ")))
	return err == nil && ok
}

// CheckGlob reports a malformed pattern (an unclosed [ or a trailing \),
// which Glob would treat as matching nothing.
func CheckGlob(pattern string) error {
	_, err := path.Match(pattern, "")
	return err
}

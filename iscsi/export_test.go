package iscsi

import "testing"

// SetCompletedHook installs completedHook for one test.
func SetCompletedHook(t testing.TB, h func(itt uint32)) {
	completedHook = h
	t.Cleanup(func() { completedHook = nil })
}

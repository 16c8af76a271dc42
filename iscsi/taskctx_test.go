package iscsi

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A task context is cancelled once, whether its Done channel was asked for
// before or after; contexts derived from it follow it.
func TestTaskCtx(t *testing.T) {
	var early taskCtx
	assert.NoError(t, early.Err())
	assert.Nil(t, early.Value("k"))
	done := early.Done()
	derived, stop := context.WithCancel(&early)
	defer stop()
	assert.False(t, closed(done))
	assert.False(t, closed(derived.Done()))
	early.cancel()
	early.cancel()
	require.ErrorIs(t, early.Err(), context.Canceled)
	assert.True(t, closed(done))
	<-derived.Done()
	assert.ErrorIs(t, derived.Err(), context.Canceled)

	var late taskCtx
	late.cancel()
	assert.ErrorIs(t, late.Err(), context.Canceled)
	assert.True(t, closed(late.Done()), "Done asked for after the cancel is closed")
	d2, stop2 := context.WithCancel(&late)
	defer stop2()
	assert.True(t, closed(d2.Done()))
}

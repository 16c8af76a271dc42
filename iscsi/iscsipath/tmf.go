package iscsipath

import "context"

// TaskManagement sends a task management function that ends a task set
// (iscsi.TMFAbortTaskSet, TMFLogicalUnitReset for the path's LU, or
// TMFTargetWarmReset) on the path's session and returns how many of its
// commands in flight the function ended (they fail retryable and settled;
// iscsi.Session.TaskManagement).
func (b *Backend) TaskManagement(ctx context.Context, fn uint8) (int, error) {
	return b.sess.TaskManagement(ctx, fn, b.opts.LUN)
}

// TargetLUN names the path's target (its iSCSI name) and LU number: paths
// with the same target share what a target reset does, those with the
// same target and LUN what a LUN reset does.
func (b *Backend) TargetLUN() (string, uint64) { return b.opts.Session.TargetName, b.opts.LUN }

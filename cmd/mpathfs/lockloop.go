package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
)

// The SCSI-2 lock loop: the metadata-lock workload ESXi hosts put on a
// shared LU (a VMFS metadata update under RESERVE(6)). Each iteration
// reserves the LU, updates one metadata block, releases it; a host that
// meets RESERVATION CONFLICT retries after a random interval and gives the
// iteration up after R attempts. Counters: conflicts, retries, failures.

// scsi2Locker is what the loop needs of a device: the SCSI-2 reservation
// and a metadata block to update while it holds it.
type scsi2Locker interface {
	Reserve6(ctx context.Context) error
	Release6(ctx context.Context) error
	// UpdateMetadata writes the metadata block (under the reservation).
	UpdateMetadata(ctx context.Context, iteration int) error
}

// lockLoopConfig is `pr lock-loop`'s flags.
type lockLoopConfig struct {
	Iterations int
	Retries    int // attempts per iteration before it fails
	BackoffMin time.Duration
	BackoffMax time.Duration
	Hold       time.Duration // how long the reservation is held around the update
	Seed       uint64
}

func (c lockLoopConfig) check() error {
	switch {
	case c.Iterations < 1:
		return fmt.Errorf("--iterations %d: want 1 or more", c.Iterations)
	case c.Retries < 1:
		return fmt.Errorf("--retries %d: want 1 or more (attempts per iteration before it counts as failed)", c.Retries)
	case c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("--backoff-min %v, --backoff-max %v: want 0 ≤ min ≤ max, e.g. --backoff-min 1ms --backoff-max 20ms", c.BackoffMin, c.BackoffMax)
	case c.Hold < 0:
		return fmt.Errorf("--hold %v: want 0 or more", c.Hold)
	}
	return nil
}

// lockLoopResult is what the loop counted (stdout and --json).
type lockLoopResult struct {
	Device     string `json:"device"`
	Iterations int    `json:"iterations"`
	// Succeeded iterations reserved, updated and released.
	Succeeded int `json:"succeeded"`
	// Conflicts is every RESERVATION CONFLICT a RESERVE(6) met.
	Conflicts int `json:"conflicts"`
	// Retries is the attempts made after a conflict.
	Retries int `json:"retries"`
	// Failures is the iterations given up after --retries attempts.
	Failures int `json:"failures"`
	// MaxAttempts is the most attempts one iteration needed.
	MaxAttempts int `json:"max_attempts"`
	// Errors are errors other than conflicts (they end the loop).
	Error string `json:"error,omitempty"`
}

// runLockLoop runs the loop; an error other than a conflict ends it (and
// is returned with the counts so far).
func runLockLoop(ctx context.Context, l scsi2Locker, cfg lockLoopConfig, res *lockLoopResult, sleep func(context.Context, time.Duration) error) error {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	res.Iterations = cfg.Iterations
	for it := 0; it < cfg.Iterations; it++ {
		got := false
		for attempt := 1; attempt <= cfg.Retries; attempt++ {
			if attempt > 1 {
				res.Retries++
			}
			res.MaxAttempts = max(res.MaxAttempts, attempt)
			err := l.Reserve6(ctx)
			if err == nil {
				got = true
				break
			}
			if !errors.Is(err, ioerr.ErrConflict) {
				return fmt.Errorf("iteration %d: reserve6: %w", it+1, err)
			}
			res.Conflicts++
			if attempt == cfg.Retries {
				break
			}
			wait := cfg.BackoffMin
			if span := cfg.BackoffMax - cfg.BackoffMin; span > 0 {
				wait += time.Duration(rng.Int64N(int64(span) + 1))
			}
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		if !got {
			res.Failures++
			continue
		}
		err := l.UpdateMetadata(ctx, it)
		if err == nil && cfg.Hold > 0 {
			err = sleep(ctx, cfg.Hold)
		}
		rerr := l.Release6(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("iteration %d: metadata update under the reservation: %w", it+1, err)
		}
		if rerr != nil {
			return fmt.Errorf("iteration %d: release6: %w", it+1, rerr)
		}
		res.Succeeded++
	}
	return nil
}

// metadataBlock is the 512 bytes an iteration writes: a magic, the host,
// the iteration and the time, so a reader of the LU sees who last held
// the lock.
func metadataBlock(host string, iteration int, now time.Time) []byte {
	b := make([]byte, 512)
	copy(b, "MPATHFS-LOCKLOOP")
	binary.BigEndian.PutUint64(b[16:], uint64(iteration))
	binary.BigEndian.PutUint64(b[24:], uint64(now.UnixNano()))
	copy(b[32:], host)
	return b
}

func printLockLoop(w io.Writer, r lockLoopResult) {
	fmt.Fprintf(w, "%s: %d iterations: %d succeeded, %d failed after retries; %d conflicts, %d retries, at most %d attempts for one\n",
		r.Device, r.Iterations, r.Succeeded, r.Failures, r.Conflicts, r.Retries, r.MaxAttempts)
	if r.Error != "" {
		fmt.Fprintf(w, "stopped: %s\n", strings.TrimSpace(r.Error))
	}
}

package fault

import (
	"bytes"
	"context"
)

// corruptBlock is the block size a seeded misdirection moves a write by
// multiples of (the integrity oracle's block).
const corruptBlock = 4096

// corruption is what one corrupting fault does to one operation, its
// random choices made when the fault fired (under the fault's generator,
// so a seeded run is reproducible).
type corruption struct {
	kind string
	// bits are the bit positions a bitflip flips, counted from the start
	// of the operation's buffer (bit i is bit i%8 of byte i/8).
	bits []int64
	// shift is how far a misdirected write lands from its own offset.
	shift int64
	// keep is how many bytes of a torn write are stored.
	keep int64
}

// corruption decides, under f.mu, what f's corruption does to o.
func (f *fault) corruption(o *op) *corruption {
	s := &f.spec
	rng := f.mu.rng
	c := &corruption{kind: s.Corrupt}
	switch s.Corrupt {
	case CorruptBitflip:
		// Flip inside the part of the operation the fault's range covers.
		lo, hi := o.off, o.off+o.length
		if s.Length > 0 {
			lo, hi = max(lo, s.Offset), min(hi, s.Offset+s.Length)
		}
		if hi <= lo {
			return nil
		}
		n := max(s.Bits, 1)
		span := (hi - lo) * 8
		for range n {
			c.bits = append(c.bits, (lo-o.off)*8+rng.Int64N(span))
		}
	case CorruptMisdirect:
		c.shift = s.MisdirectBy
		if c.shift == 0 {
			c.shift = (1 + rng.Int64N(8)) * corruptBlock
			if rng.IntN(2) == 0 {
				c.shift = -c.shift
			}
		}
	case CorruptTorn:
		c.keep = s.TornAt
		if c.keep == 0 {
			if secs := o.length / 512; secs > 1 {
				c.keep = (1 + rng.Int64N(secs-1)) * 512
			}
		}
		c.keep = min(c.keep, o.length)
	}
	return c
}

// flip flips c's bits that fall inside p (a read may come back short).
func (c *corruption) flip(p []byte) {
	for _, i := range c.bits {
		if i/8 < int64(len(p)) {
			p[i/8] ^= 1 << (i % 8)
		}
	}
}

// corruptWrite carries out a write that c corrupts and acknowledges it in
// full as long as the backend underneath accepted what it was given.
func (b *Backend) corruptWrite(ctx context.Context, c *corruption, p []byte, off int64) (int, error) {
	switch c.kind {
	case CorruptBitflip:
		q := bytes.Clone(p) // the caller's buffer stays intact
		c.flip(q)
		if _, err := b.inner.WriteAt(ctx, q, off); err != nil {
			return 0, err
		}
	case CorruptMisdirect:
		at := off + c.shift
		if size := b.inner.Size(); at < 0 || at+int64(len(p)) > size {
			at = off - c.shift // off the device that way: the other way
			if at < 0 || at+int64(len(p)) > size {
				return b.inner.WriteAt(ctx, p, off) // nowhere else to go
			}
		}
		if _, err := b.inner.WriteAt(ctx, p, at); err != nil {
			return 0, err
		}
	case CorruptDrop:
		// Acknowledged, never stored.
	case CorruptTorn:
		if c.keep > 0 {
			if _, err := b.inner.WriteAt(ctx, p[:c.keep], off); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/integrity"
)

// TestCorruptionFaultsAreCaught: every corruption fault of `fault inject
// --corrupt`, through the real binary, on one of two file paths of a
// `mount --verify` device (VMW_PSP_FIXED, so every I/O takes the path the
// fault sits on). Direct 4 KiB writes of distinct data fill 256 KiB; the
// fault fires on the block at 64 KiB only; then `mpathfs verify --json`
// must name the right kind at the right offset (and, for a misdirected
// write, where it landed), read through the device and the faulty path,
// and find nothing through the healthy path where the store is intact.
func TestCorruptionFaultsAreCaught(t *testing.T) {
	const at = 64 << 10
	for _, c := range []struct {
		name  string
		fault []string
		// before: inject the fault before the data is written (writes are
		// corrupted); otherwise after (the block at 64k is rewritten, or
		// for a read fault only read).
		before  bool
		kind    string
		foundAt int64
		// store: the store itself is wrong, so every reader sees it.
		store bool
	}{
		{"bitflip-write", []string{"--corrupt", "bitflip", "--bits", "3", "--op", "write"}, true, integrity.KindCorrupt, 0, true},
		{"bitflip-read", []string{"--corrupt", "bitflip", "--op", "read"}, false, integrity.KindCorrupt, 0, false},
		{"misdirect", []string{"--corrupt", "misdirect", "--misdirect-by", "8k", "--op", "write", "--count", "1"}, false, integrity.KindMisdirected, at + 8192, true},
		{"drop", []string{"--corrupt", "drop", "--op", "write"}, false, integrity.KindLost, 0, true},
		{"torn", []string{"--corrupt", "torn", "--torn-at", "2k", "--op", "write"}, false, integrity.KindTorn, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := store(t, 16<<20)
			args := append([]string{"--name", "d0", "--psp", "VMW_PSP_FIXED", "--verify"}, filePaths(st, 2)...)
			m := startMount(t, args...)
			f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
			require.NoError(t, err)
			defer f.Close() // on failure; closed before the clean stop below
			buf := alignedBlock(4096)
			write := func(off int64, gen int) {
				t.Helper()
				for i := range buf {
					buf[i] = byte(i/512) ^ byte(off>>12) ^ byte(gen*31) ^ byte(i*7)
				}
				copy(buf, fmt.Sprintf("block %d generation %d", off, gen))
				_, err := f.WriteAt(buf, off)
				require.NoError(t, err, "a corrupted write is acknowledged all the same")
			}

			// A first write shows which path the device uses.
			write(0, 1)
			io := pathIO(m.status(), "d0")
			var victim, healthy string
			for p, n := range io {
				if n > 0 {
					victim = p
				} else {
					healthy = p
				}
			}
			require.NotEmpty(t, victim, "no path carried the first write: %v", io)
			require.NotEmpty(t, healthy, "both paths carried I/O under VMW_PSP_FIXED: %v", io)
			inject := func() {
				out := m.mustCtl(append([]string{"fault", "inject", victim, "--range", "64k:4k"}, c.fault...)...)
				require.Contains(t, out, "--corrupt "+c.fault[1])
				list := m.mustCtl("fault", "list")
				require.Contains(t, list, "--corrupt "+c.fault[1], "fault list shows the corruption")
			}
			if c.before {
				inject()
			}
			for off := int64(4096); off < 256<<10; off += 4096 {
				write(off, 1)
			}
			if !c.before {
				inject()
				if c.name != "bitflip-read" {
					write(at, 2) // the write the fault corrupts
				}
			}

			cmd := exec.Command(binary, "verify", "--json", "--control", m.socket, "d0")
			out, _ := cmd.Output() // exits non-zero on problems
			var rep integrity.Report
			require.NoError(t, json.Unmarshal(out, &rep), "verify --json: %s", out)
			require.NotEmpty(t, rep.Problems, "the checker missed the %s fault", c.name)
			vias := map[string]bool{}
			for _, p := range rep.Problems {
				t.Logf("%s", p)
				assert.Equal(t, c.kind, p.Kind, "kind of %s", p)
				assert.Equal(t, int64(at), p.Offset, "offset of %s", p)
				assert.Equal(t, c.foundAt, p.FoundAt, "where it landed, of %s", p)
				vias[p.Via] = true
			}
			assert.True(t, vias["device"], "read through the device: %v", vias)
			assert.True(t, vias[victim], "read through the faulty path %s: %v", victim, vias)
			assert.Equal(t, c.store, vias[healthy], "read through the healthy path %s (the store is wrong: %v): %v", healthy, c.store, vias)
			m.mustCtl("fault", "clear", victim)
			require.NoError(t, f.Close())
			m.stopClean(t)
		})
	}
}

package fusedev

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFioVerify runs fio with O_DIRECT, 4k random read/write at queue depth
// 16 with crc32c verification over 64 MiB of the device file.
func TestFioVerify(t *testing.T) {
	need(t, "fio")
	d := newTestDev(t, "disk0", 64<<20)
	_, mp := mountT(t, Options{}, d)
	out := run(t, 2*time.Minute, "fio", "--name=randrw-verify",
		"--filename="+filepath.Join(mp, "disk0"), "--direct=1",
		"--rw=randrw", "--bs=4k", "--size=64M", "--ioengine=libaio", "--iodepth=16",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
		"--randrepeat=0", "--allow_file_create=0", "--fallocate=none",
		"--runtime=5", "--output-format=json")
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOs int64 `json:"total_ios"`
			} `json:"read"`
			Write struct {
				IOs int64 `json:"total_ios"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("fio output: %v\n%s", err, out)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 {
		t.Fatalf("fio job error: %+v\n%s", res.Jobs, out)
	}
	j := res.Jobs[0]
	t.Logf("fio: %d reads, %d writes, verified", j.Read.IOs, j.Write.IOs)
	if j.Write.IOs == 0 || j.Read.IOs == 0 {
		t.Errorf("fio did no I/O: %+v", j)
	}
}

// TestLoopExt4 puts a loop device on the device file (buffered and with
// --direct-io=on), makes an ext4 file system, writes files, remounts,
// checks them and runs e2fsck -fn.
func TestLoopExt4(t *testing.T) {
	need(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fstrim", "sync")
	for _, direct := range []bool{false, true} {
		name := "buffered"
		if direct {
			name = "direct-io"
		}
		t.Run(name, func(t *testing.T) {
			d := newTestDev(t, "disk0", 256<<20)
			_, mp := mountT(t, Options{}, d)
			args := []string{"--find", "--show"}
			if direct {
				args = append(args, "--direct-io=on")
			}
			loop := strings.TrimSpace(run(t, 30*time.Second, "losetup", append(args, filepath.Join(mp, "disk0"))...))
			t.Cleanup(func() {
				if out, err := runErr(30*time.Second, "losetup", "-d", loop); err != nil {
					t.Errorf("losetup -d %s: %v\n%s", loop, err, out)
				}
			})
			if direct {
				st := run(t, 5*time.Second, "losetup", "--list", "--noheadings", "--output", "DIO", loop)
				if strings.TrimSpace(st) != "1" {
					t.Errorf("loop device direct I/O = %q, want 1", st)
				}
			}
			run(t, time.Minute, "mkfs.ext4", "-q", "-F", loop)
			if d.discards.Load() == 0 {
				t.Logf("mkfs.ext4 sent no discard")
			}
			fsdir := t.TempDir()
			mounted := false
			mount := func() {
				run(t, 30*time.Second, "mount", "-t", "ext4", loop, fsdir)
				mounted = true
			}
			umount := func() {
				run(t, 30*time.Second, "umount", fsdir)
				mounted = false
			}
			t.Cleanup(func() {
				if mounted {
					if _, err := runErr(30*time.Second, "umount", fsdir); err != nil {
						_, _ = runErr(30*time.Second, "umount", "-l", fsdir)
					}
				}
			})
			mount()
			want := map[string][]byte{}
			for i := range 8 {
				n := fmt4("f", i)
				data := pattern(1<<20+i*4096+17, byte(i))
				want[n] = data
				if err := os.WriteFile(filepath.Join(fsdir, n), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			big := pattern(24<<20, 0xee)
			want["big"] = big
			if err := os.WriteFile(filepath.Join(fsdir, "big"), big, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, 30*time.Second, "sync")
			flushes := d.flushes.Load()
			umount()
			if d.flushes.Load() == flushes && flushes == 0 {
				t.Errorf("ext4 journal and unmount sent no flush to the device")
			}
			mount()
			for n, data := range want {
				got, err := os.ReadFile(filepath.Join(fsdir, n))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(data) {
					t.Errorf("%s differs after remount", n)
				}
			}
			if err := os.Remove(filepath.Join(fsdir, "big")); err != nil {
				t.Fatal(err)
			}
			run(t, 30*time.Second, "fstrim", fsdir)
			umount()
			out := run(t, time.Minute, "e2fsck", "-fn", loop)
			t.Logf("e2fsck: %s", strings.TrimSpace(lastLine(out)))
			t.Logf("device: %d writes, %d flushes, %d discards, %d write-zeroes",
				d.writes.Load(), d.flushes.Load(), d.discards.Load(), d.zeroes.Load())
		})
	}
}

func fmt4(prefix string, i int) string { return prefix + string(rune('0'+i)) }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

package scsi

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func rtpgSeeds() [][]byte {
	return [][]byte{rtpgTwo, rtpgExtended, rtpgTwo[:10], {0, 0, 0, 0}, rtpgResp(false, 0, descT)}
}

func vpd83Seeds() [][]byte {
	return [][]byte{vpd83Full, vpd83(desT10, desEUI), vpd83(desPort, desTPG), vpd83()}
}

func senseSeeds() [][]byte {
	return [][]byte{
		fixedSense(0x70, 2, 4, 0x0a), fixedSense(0x71, 6, 0x2a, 6), fixedSense(0xf0, 3, 0x11, 0),
		descSense(0x72, 2, 4, 0x0b), descSense(0x73, 5, 0x25, 0),
	}
}

var writeCorpus = flag.Bool("write-seed-corpus", false, "rewrite testdata/fuzz from the fixtures")

// TestSeedCorpus rewrites the committed seed corpus with -write-seed-corpus.
func TestSeedCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-seed-corpus to rewrite testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{"FuzzRTPG": rtpgSeeds(), "FuzzVPD83": vpd83Seeds(), "FuzzSense": senseSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

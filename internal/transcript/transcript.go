// Package transcript is the one runner of the data-driven tests (in the
// style of pebble's and raft's datadriven): a file holds commands, each
// followed by a line "----" and the output it should give, ended by a blank
// line; lines starting with "#" are comments. A test hands each command to
// its interpreter and compares the output; run with -rewrite, it writes the
// outputs it got back into the file instead:
//
//	go test ./nmp -run TestTranscripts -rewrite
//
// The interpreter keeps its own state (a device, a simulated array, a fake
// clock inside a synctest bubble); the runner knows only the file format.
package transcript

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the transcripts under testdata/")

// Block is one command of a transcript with the comments before it and the
// output it should give. A trailing Block with comments only and no Cmd
// keeps the comments at the end of a file.
type Block struct {
	Comments []string
	Cmd      string
	Want     []string
	Line     int // the command's line number, from 1
}

// Parse splits a transcript into blocks. Blank lines between blocks do
// not count; a command without "----" expects no output.
func Parse(data string) []*Block {
	var blocks []*Block
	lines := strings.Split(data, "\n")
	var comments []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case strings.HasPrefix(l, "#"):
			comments = append(comments, l)
			continue
		}
		b := &Block{Comments: comments, Cmd: strings.TrimSpace(l), Line: i + 1}
		comments = nil
		if i+1 < len(lines) && lines[i+1] == "----" {
			i += 2
			for ; i < len(lines) && lines[i] != ""; i++ {
				b.Want = append(b.Want, lines[i])
			}
		}
		blocks = append(blocks, b)
	}
	if len(comments) > 0 {
		blocks = append(blocks, &Block{Comments: comments})
	}
	return blocks
}

// Format writes blocks back with outs[i] as the output of blocks[i].
func Format(blocks []*Block, outs [][]string) string {
	var b strings.Builder
	for i, bl := range blocks {
		for _, c := range bl.Comments {
			b.WriteString(c + "\n")
		}
		if bl.Cmd == "" {
			continue
		}
		b.WriteString(bl.Cmd + "\n----\n")
		for _, o := range outs[i] {
			b.WriteString(o + "\n")
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// Lines splits an interpreter's text output into the lines Run compares
// (no trailing newline; no output is no lines).
func Lines(out string) []string {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// Run runs the transcript in file: every command through do, in order,
// each output compared with the expected one (a mismatch is a test error
// naming the file, line and command); with -rewrite the file gets the
// outputs instead.
func Run(t testing.TB, file string, do func(cmd string) []string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks := Parse(string(data))
	outs := make([][]string, len(blocks))
	failed := false
	for i, b := range blocks {
		if b.Cmd == "" {
			continue
		}
		outs[i] = do(b.Cmd)
		if !*rewrite && !slices.Equal(outs[i], b.Want) && (len(outs[i]) != 0 || len(b.Want) != 0) {
			t.Errorf("%s:%d: %s\n--- want\n%s\n--- got\n%s", file, b.Line, b.Cmd,
				strings.Join(b.Want, "\n"), strings.Join(outs[i], "\n"))
			failed = true
		}
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(Format(blocks, outs)), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if failed {
		t.Log("run with -rewrite to accept the new output")
	}
}

// Files returns the transcripts matching pattern (filepath.Glob), failing
// the test when there are fewer than min.
func Files(t testing.TB, pattern string, min int) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < min {
		t.Fatalf("%d transcripts match %s, want at least %d", len(files), pattern, min)
	}
	return files
}

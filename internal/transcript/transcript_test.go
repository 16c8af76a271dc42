package transcript

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sample = `# a comment
echo a b
----
a b

# two commands
silent

echo x
----
x

# trailing comment
`

func TestParseFormat(t *testing.T) {
	blocks := Parse(sample)
	require.Len(t, blocks, 4)
	assert.Equal(t, &Block{Comments: []string{"# a comment"}, Cmd: "echo a b", Want: []string{"a b"}, Line: 2}, blocks[0])
	assert.Equal(t, &Block{Comments: []string{"# two commands"}, Cmd: "silent", Line: 7}, blocks[1])
	assert.Equal(t, []string{"# trailing comment"}, blocks[3].Comments)
	assert.Empty(t, blocks[3].Cmd)

	outs := [][]string{{"a b"}, nil, {"x"}, nil}
	assert.Equal(t, "# a comment\necho a b\n----\na b\n\n# two commands\nsilent\n----\n\necho x\n----\nx\n\n# trailing comment\n", Format(blocks, outs))
	assert.Equal(t, Format(blocks, outs), Format(Parse(Format(blocks, outs)), outs), "Format and Parse round-trip")
}

func TestLines(t *testing.T) {
	assert.Nil(t, Lines(""))
	assert.Nil(t, Lines("\n"))
	assert.Equal(t, []string{"a", "", "b"}, Lines("a\n\nb\n"))
}

// echo is an interpreter: "echo ARGS" prints them, anything else nothing.
func echo(cmd string) []string {
	if rest, ok := strings.CutPrefix(cmd, "echo "); ok {
		return []string{rest}
	}
	return nil
}

type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Errorf(format string, _ ...any) { r.errors = append(r.errors, format) }
func (r *recorder) Log(...any)                     {}

func TestRun(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.txt")
	require.NoError(t, os.WriteFile(file, []byte(sample), 0o644))
	r := &recorder{TB: t}
	Run(r, file, echo)
	assert.Empty(t, r.errors, "the sample passes")

	require.NoError(t, os.WriteFile(file, []byte(strings.Replace(sample, "x\n\n#", "y\n\n#", 1)), 0o644))
	r = &recorder{TB: t}
	Run(r, file, echo)
	assert.Len(t, r.errors, 1, "a wrong output is an error")

	assert.Equal(t, []string{file}, Files(t, filepath.Join(filepath.Dir(file), "*.txt"), 1))
}

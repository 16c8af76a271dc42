package host

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/nmp"
)

// The "file" class of the claim rules (and the SATP rules operators add)
// is the mount's config file when it has one: a rule change rewrites its
// claim_rules, satp_rules and satp_default_psp keys, and leaves every
// other key, and the
// comments yaml.v3 keeps, as they were. The file is replaced atomically
// (a temporary file in its directory, renamed over it), with its mode.

// saveRules writes the user claim rules of the file class and the user
// SATP rules to the config file; without one it does nothing.
func (h *Host) saveRules() error {
	if h.configFile == "" {
		return nil
	}
	var user []nmp.SATPRule
	for _, r := range h.satpRules.List() {
		if r.Group == "user" {
			r.Group = ""
			user = append(user, r)
		}
	}
	return writeRules(h.configFile, h.claims.FileRules(), user, DefaultPSPOverrides(h.satpRules))
}

func writeRules(name string, claims []string, satp []nmp.SATPRule, defaultPSP map[string]string) error {
	fail := func(err error) error {
		return fmt.Errorf("%w %s: %v (the change was not made; fix the file's permissions or mount without --config)", errNoConfig, name, err)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return fail(err)
	}
	st, err := os.Stat(name)
	if err != nil {
		return fail(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fail(err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return fail(fmt.Errorf("the file is not a YAML mapping"))
	}
	root := doc.Content[0]
	var cl yaml.Node
	if err := cl.Encode(claims); err != nil {
		return fail(err)
	}
	setKey(root, "claim_rules", &cl, len(claims) > 0)
	var sr yaml.Node
	if err := sr.Encode(satp); err != nil {
		return fail(err)
	}
	setKey(root, "satp_rules", &sr, len(satp) > 0)
	var dp yaml.Node
	if err := dp.Encode(defaultPSP); err != nil {
		return fail(err)
	}
	setKey(root, "satp_default_psp", &dp, len(defaultPSP) > 0)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fail(err)
	}
	enc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fail(err)
	}
	return nil
}

// setKey sets key to v in a mapping (appending it when missing), or
// deletes it when !keep.
func setKey(m *yaml.Node, key string, v *yaml.Node, keep bool) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			if !keep {
				m.Content = append(m.Content[:i], m.Content[i+2:]...)
				return
			}
			v.HeadComment, v.LineComment = m.Content[i+1].HeadComment, m.Content[i+1].LineComment
			m.Content[i+1] = v
			return
		}
	}
	if keep {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	}
}

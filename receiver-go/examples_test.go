package ebpfreceiver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// catalogFixture is the sidecar's Describe response for the repository's
// catalog (bpf/ and examples/programs/), written by `make generate`.
var catalogFixture = filepath.Join("testdata", "catalog", "describe.json")

// realDescribe loads what the sidecar describes for the real catalog.
func realDescribe(t testing.TB) *sidecarpb.DescribeResponse {
	t.Helper()
	b, err := os.ReadFile(catalogFixture)
	require.NoError(t, err, "run 'make generate' to write %s", catalogFixture)
	desc := &sidecarpb.DescribeResponse{}
	require.NoError(t, protojson.Unmarshal(b, desc))
	require.NotEmpty(t, desc.GetPrograms())
	return desc
}

// example is one `ebpf` receiver configured in a file users copy from.
type example struct {
	file string // relative to the repository root
	line int    // of the receiver's key (ebpf or ebpf/<name>)
	id   string // the receiver's id
	raw  map[string]any
}

func (e example) String() string { return fmt.Sprintf("%s:%d (receivers::%s)", e.file, e.line, e.id) }

// repoRoot is the repository, one level above this module.
const repoRoot = ".."

// TestExamplesResolveAgainstTheCatalog checks every `ebpf` receiver the
// repository shows users — in the READMEs, docs, shipped collector configs
// and the Kubernetes manifests — the way the collector would take it: through
// confmap into Config, Validate, then resolved against the real catalog. A
// copied example must never stop the collector at start.
func TestExamplesResolveAgainstTheCatalog(t *testing.T) {
	desc := realDescribe(t)
	examples := findExamples(t)

	// Each of these shows at least one receiver config; finding none means
	// the finder broke, not that all is well.
	for _, f := range []string{
		"README.md", "receiver-go/README.md", "docs/own-programs.md",
		"collector-config/default.yaml", "collector-config/seed-example.yaml",
		"collector-config/examples/full.yaml", "deploy/kubernetes/daemonset.yaml",
	} {
		assert.True(t, slices.ContainsFunc(examples, func(e example) bool { return e.file == f }),
			"found no ebpf receiver config in %s", f)
	}

	for _, ex := range examples {
		t.Run(ex.String(), func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig().(*Config)
			if err := confmap.NewFromStringMap(ex.raw).Unmarshal(cfg); err != nil {
				t.Fatalf("%s: does not unmarshal: %v", ex, err)
			}
			if err := confmap.Validate(cfg); err != nil {
				t.Fatalf("%s: is not valid: %v", ex, err)
			}
			if _, err := resolve(cfg, desc, recordedJudge(t, desc)); err != nil {
				t.Fatalf("%s: does not resolve against the catalog (%s): %v", ex, catalogFixture, err)
			}
		})
	}
}

// findExamples collects every ebpf receiver config from the Markdown files'
// yaml blocks, the collector configs, and collector configs embedded in the
// deploy manifests' ConfigMaps.
func findExamples(t *testing.T) []example {
	t.Helper()
	var files []string
	for _, pattern := range []string{"README.md", "receiver-go/README.md", "docs/*.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		require.NoError(t, err)
		files = append(files, m...)
	}
	for _, dir := range []string{"collector-config", "deploy"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d os.DirEntry, err error) error {
			// A Helm chart's templates are Go templates, not YAML; the chart's
			// receiver config is checked rendered, in deploy/kubernetes.
			if err == nil && d.IsDir() && d.Name() == "templates" {
				return filepath.SkipDir
			}
			if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				files = append(files, path)
			}
			return err
		})
		require.NoError(t, err)
	}

	var examples []example
	for _, path := range files {
		rel, err := filepath.Rel(repoRoot, path)
		require.NoError(t, err)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		if strings.HasSuffix(path, ".md") {
			for _, block := range yamlBlocks(b) {
				found, err := receiversIn(block.text, rel, block.line)
				require.NoError(t, err, "%s:%d: the yaml block does not parse", rel, block.line)
				examples = append(examples, found...)
			}
			continue
		}
		found, err := receiversIn(b, rel, 0)
		require.NoError(t, err, "%s does not parse", rel)
		examples = append(examples, found...)
	}
	return examples
}

type mdBlock struct {
	text []byte
	line int // of the opening fence; the block's first line is line+1
}

// yamlBlocks returns the ```yaml fenced blocks of a Markdown file. Fences
// may be indented (inside a list item); the indent is removed.
func yamlBlocks(md []byte) []mdBlock {
	var blocks []mdBlock
	var cur *mdBlock
	indent := ""
	sc := bufio.NewScanner(bytes.NewReader(md))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case cur == nil && (trimmed == "```yaml" || trimmed == "```yml"):
			cur = &mdBlock{line: n}
			indent = line[:len(line)-len(trimmed)]
		case cur != nil && trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text = append(cur.text, strings.TrimPrefix(line, indent)...)
			cur.text = append(cur.text, '\n')
		}
	}
	return blocks
}

// receiversIn returns the ebpf receivers of every YAML document in text.
// lineOffset is added to line numbers within text. Kubernetes ConfigMaps
// are searched for collector configs in their data values.
func receiversIn(text []byte, file string, lineOffset int) ([]example, error) {
	var examples []example
	dec := yaml.NewDecoder(bytes.NewReader(text))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return examples, nil
			}
			return nil, err
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		found, err := ebpfReceivers(root, file, lineOffset)
		if err != nil {
			return nil, err
		}
		examples = append(examples, found...)
		if kind := mappingValue(root, "kind"); kind != nil && kind.Value == "ConfigMap" {
			data := mappingValue(root, "data")
			for i := 0; data != nil && i+1 < len(data.Content); i += 2 {
				value := data.Content[i+1]
				// A literal block (`config.yaml: |`) starts on the line
				// after its indicator.
				embedded, err := receiversIn([]byte(value.Value), file, lineOffset+value.Line)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %w", file, lineOffset+value.Line, err)
				}
				examples = append(examples, embedded...)
			}
		}
	}
}

// ebpfReceivers returns receivers::ebpf and receivers::ebpf/<name> of a
// collector config.
func ebpfReceivers(root *yaml.Node, file string, lineOffset int) ([]example, error) {
	receivers := mappingValue(root, "receivers")
	if receivers == nil || receivers.Kind != yaml.MappingNode {
		return nil, nil // not a collector config (e.g. the ocb manifest's list)
	}
	var examples []example
	for i := 0; i+1 < len(receivers.Content); i += 2 {
		key, value := receivers.Content[i], receivers.Content[i+1]
		if key.Value != "ebpf" && !strings.HasPrefix(key.Value, "ebpf/") {
			continue
		}
		raw := map[string]any{}
		if err := value.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%s:%d: receivers::%s: %w", file, lineOffset+key.Line, key.Value, err)
		}
		examples = append(examples, example{file: filepath.ToSlash(file), line: lineOffset + key.Line, id: key.Value, raw: raw})
	}
	return examples, nil
}

// mappingValue returns the value of key in a mapping node, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// verdictsFixture holds what the sidecar's judge answered for each catalog
// program under every combination of its bool parameters (scripts/gen-describe.sh).
const verdictsFixture = "testdata/catalog/verdicts.json"

type recordedVerdict struct {
	Program    string            `json:"program"`
	Parameters map[string]string `json:"parameters"`
	Maps       []string          `json:"maps"`
}

// recordedJudge replays the sidecar judge's recorded verdicts: the maps a
// request's bool parameters compile in, as the sidecar itself decided them
// when the fixture was generated. Other parameters keep their defaults in
// the recording; their values are the sidecar's to check (the end-to-end
// examples test starts every example against the live sidecar).
func recordedJudge(t testing.TB, desc *sidecarpb.DescribeResponse) judge {
	t.Helper()
	b, err := os.ReadFile(verdictsFixture)
	require.NoError(t, err, "run 'make generate' to write %s", verdictsFixture)
	var verdicts []recordedVerdict
	require.NoError(t, json.Unmarshal(b, &verdicts))
	return func(req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		var compiledOut []string
		for _, pr := range req.GetPrograms() {
			p := findProgram(desc, pr.GetName())
			if p == nil {
				continue // fakeJudge reports it
			}
			v := matchVerdict(verdicts, p, pr.GetParameters())
			if v == nil {
				return nil, fmt.Errorf("no recorded verdict for program %q with parameters %v: run 'make generate'", pr.GetName(), pr.GetParameters())
			}
			for _, m := range p.GetMaps() {
				if !slices.Contains(v.Maps, m.GetName()) {
					compiledOut = append(compiledOut, p.GetName()+"/"+m.GetName())
				}
			}
		}
		return fakeJudge(desc, compiledOut...)(req)
	}
}

func findProgram(desc *sidecarpb.DescribeResponse, name string) *sidecarpb.Program {
	for _, p := range desc.GetPrograms() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// matchVerdict finds the recording whose bool parameters are the request's
// (spelled as the recording spells them), or their defaults.
func matchVerdict(verdicts []recordedVerdict, p *sidecarpb.Program, params map[string]string) *recordedVerdict {
	want := map[string]string{}
	for _, par := range p.GetParameters() {
		if par.GetType() != "bool" {
			continue
		}
		value, set := params[par.GetName()]
		if !set {
			value = par.GetDefault()
		}
		want[par.GetName()] = strings.ToLower(strings.TrimSpace(value))
	}
	for i := range verdicts {
		if verdicts[i].Program == p.GetName() && maps.Equal(verdicts[i].Parameters, want) {
			return &verdicts[i]
		}
	}
	return nil
}

package ebpfreceiver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// Fuzz targets for what the receiver takes from outside: snapshots from the
// sidecar and configs from users. `make test` runs each for a few seconds
// (scripts/test.sh), `make fuzz` for longer; inputs that failed are kept
// under testdata/fuzz/<target> and run as regression cases by every
// `go test`.

// FuzzConvert feeds snapshots, seeded from the golden conversion cases and
// mutated on the wire format, to the converters of those cases: whatever
// the sidecar sends, conversion must not panic and must produce metrics
// that marshal.
func FuzzConvert(f *testing.F) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "convert", "*"))
	require.NoError(f, err)
	require.NotEmpty(f, dirs)
	var converters []*converter
	for i, dir := range dirs {
		converters = append(converters, newConvEnv(f, loadConfig(f, filepath.Join(dir, "config.yaml")), testDescribe()).conv)
		wire, err := proto.Marshal(loadSnapshot(f, filepath.Join(dir, "snapshot.json")))
		require.NoError(f, err)
		f.Add(uint8(i), wire)
	}
	marshaler := &pmetric.ProtoMarshaler{}
	f.Fuzz(func(t *testing.T, which uint8, wire []byte) {
		snap := &sidecarpb.Snapshot{}
		if proto.Unmarshal(wire, snap) != nil {
			return
		}
		md := converters[int(which)%len(converters)].convert(snap)
		_, err := marshaler.MarshalMetrics(md)
		require.NoError(t, err)
	})
}

// FuzzResolve feeds receiver configs, seeded from the test configs and the
// golden cases' configs, through unmarshalling, validation and resolution
// against the fake catalog and the real one: a config may be refused, with
// an error, but never panic the collector at start.
func FuzzResolve(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "convert", "*", "config.yaml"))
	require.NoError(f, err)
	seeds = append(seeds, filepath.Join("testdata", "config.yaml"))
	for _, file := range seeds {
		b, err := os.ReadFile(file)
		require.NoError(f, err)
		f.Add(b)
	}
	catalogs := []*sidecarpb.DescribeResponse{testDescribe(), realDescribe(f)}
	f.Fuzz(func(t *testing.T, text []byte) {
		var raw map[string]any
		if yaml.Unmarshal(text, &raw) != nil {
			return
		}
		// A config file of testdata holds receivers by id; a golden case's is one receiver.
		for _, conf := range receiverConfs(raw) {
			cfg := createDefaultConfig().(*Config)
			if confmap.NewFromStringMap(conf).Unmarshal(cfg) != nil || cfg.Validate() != nil {
				continue
			}
			for _, desc := range catalogs {
				res, err := resolve(cfg, desc, fakeJudge(desc))
				if err == nil {
					require.NotNil(t, res.request)
					newConverter(res.bindings, "fuzz", zap.NewNop(), nopSelfTelemetry(t))
				}
			}
		}
	})
}

func receiverConfs(raw map[string]any) []map[string]any {
	confs := []map[string]any{raw}
	for _, v := range raw {
		if m, ok := v.(map[string]any); ok {
			confs = append(confs, m)
		}
	}
	return confs
}

package ebpfreceiver

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/convert/*/expected.yaml from the current output")

// Each folder of testdata/convert holds a receiver config (config.yaml, the
// body of `ebpf:`), a snapshot in protojson (snapshot.json) and the expected
// metrics (expected.yaml). The catalog is testDescribe().
func TestConvertGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "convert", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			conv, _ := loadConverter(t, filepath.Join(dir, "config.yaml"))
			snap := loadSnapshot(t, filepath.Join(dir, "snapshot.json"))
			actual := conv.convert(snap)

			expectedFile := filepath.Join(dir, "expected.yaml")
			if *updateGolden {
				require.NoError(t, golden.WriteMetrics(t, expectedFile, actual, golden.SkipMetricTimestampNormalization()))
			}
			expected, err := golden.ReadMetrics(expectedFile)
			require.NoError(t, err)
			// golden files are written sorted; the converter's own order (first
			// appearance) is not part of the contract.
			require.NoError(t, pmetrictest.CompareMetrics(expected, actual,
				pmetrictest.IgnoreResourceMetricsOrder(),
				pmetrictest.IgnoreMetricsOrder(),
				pmetrictest.IgnoreMetricDataPointsOrder()))
			require.NoError(t, pmetrictest.ValidateMetrics(actual))
		})
	}
}

func TestConvertLogsSkippedMaps(t *testing.T) {
	env := newConvEnv(t, loadConfig(t, filepath.Join("testdata", "convert", "map_error_skipped", "config.yaml")), testDescribe())
	conv, logs := env.conv, env.logs
	md := conv.convert(loadSnapshot(t, filepath.Join("testdata", "convert", "map_error_skipped", "snapshot.json")))
	assert.Equal(t, 1, md.DataPointCount())
	assert.Equal(t, map[string]int64{
		"map=syscalls,program=syscount,reason=read": 1,
		"map=oncpu,program=oncpu,reason=malformed":  1,
	}, env.counterValues(t, metricMapErrors))

	failed := logs.FilterMessageSnippet("could not read a map").All()
	require.Len(t, failed, 1)
	assert.Equal(t, "decoding key field syscall: unknown syscall number 999", failed[0].ContextMap()["error"])

	malformed := logs.FilterMessageSnippet("Malformed map snapshot").All()
	require.Len(t, malformed, 1)
	assert.Equal(t, `column "time_ns" has 1 uints values but the map snapshot has 2 entries`, malformed[0].ContextMap()["error"])
}

func TestConvertLogsFullMapOnce(t *testing.T) {
	env := newConvEnv(t, loadConfig(t, filepath.Join("testdata", "convert", "gauge", "config.yaml")), testDescribe())
	conv, logs := env.conv, env.logs
	snap := loadSnapshot(t, filepath.Join("testdata", "convert", "gauge", "snapshot.json"))
	snap.Maps[0].DroppedUpdates = 5
	conv.convert(snap)
	conv.convert(snap)
	snap.Maps[0].DroppedUpdates = 9
	conv.convert(snap)
	assert.Equal(t, 2, logs.FilterMessageSnippet("BPF map is full").Len())
	key := "map=" + snap.Maps[0].Map + ",program=" + snap.Maps[0].Program
	assert.Equal(t, map[string]int64{key: 9}, env.counterValues(t, metricDroppedUpdates))

	// A new stream of the same attach does not count the total again.
	conv2 := newConverter(env.res.bindings, "1.2.3", zap.NewNop(), conv.tel)
	conv2.convert(snap)
	assert.Equal(t, map[string]int64{key: 9}, env.counterValues(t, metricDroppedUpdates))
	// A re-attached program counts from zero.
	snap.Maps[0].AttachTimeUnixNano++
	snap.Maps[0].DroppedUpdates = 2
	conv2.convert(snap)
	assert.Equal(t, map[string]int64{key: 11}, env.counterValues(t, metricDroppedUpdates))
}

func TestConvertIgnoresUnboundMaps(t *testing.T) {
	conv, _ := loadConverter(t, filepath.Join("testdata", "convert", "gauge", "config.yaml"))
	snap := loadSnapshot(t, filepath.Join("testdata", "convert", "sum_resource_grouping", "snapshot.json"))
	assert.Equal(t, 0, conv.convert(snap).DataPointCount())
}

func loadConverter(t *testing.T, configFile string) (*converter, *observer.ObservedLogs) {
	t.Helper()
	env := newConvEnv(t, loadConfig(t, configFile), testDescribe())
	return env.conv, env.logs
}

func loadConfig(t *testing.T, configFile string) *Config {
	t.Helper()
	cm, err := confmaptest.LoadConf(configFile)
	require.NoError(t, err)
	cfg := createDefaultConfig().(*Config)
	require.NoError(t, cm.Unmarshal(cfg))
	require.NoError(t, cfg.Validate())
	return cfg
}

// convEnv is a converter with observed logs and self-telemetry.
type convEnv struct {
	conv *converter
	res  *resolution
	logs *observer.ObservedLogs
	tel  *componenttest.Telemetry
}

func newConvEnv(t *testing.T, cfg *Config, desc *sidecarpb.DescribeResponse) *convEnv {
	t.Helper()
	res, err := resolve(cfg, desc)
	require.NoError(t, err)
	core, logs := observer.New(zap.DebugLevel)
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	tel, err := newSelfTelemetry(tt.NewTelemetrySettings())
	require.NoError(t, err)
	return &convEnv{conv: newConverter(res.bindings, "1.2.3", zap.New(core), tel), res: res, logs: logs, tel: tt}
}

// counterValues returns the data points of self-metric name as their
// attribute sets (k=v,... sorted) and values.
func (e *convEnv) counterValues(t *testing.T, name string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	m, err := e.tel.GetMetric(name)
	if err != nil {
		return got
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a sum of int64, got %T", name, m.Data)
	assert.True(t, sum.IsMonotonic)
	for _, dp := range sum.DataPoints {
		var kv []string
		for _, a := range dp.Attributes.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.Emit())
		}
		got[strings.Join(kv, ",")] = dp.Value
	}
	return got
}

func loadSnapshot(t *testing.T, file string) *sidecarpb.Snapshot {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	snap := &sidecarpb.Snapshot{}
	require.NoError(t, protojson.Unmarshal(b, snap))
	return snap
}

func nopSelfTelemetry(t *testing.T) *selfTelemetry {
	t.Helper()
	tel, err := newSelfTelemetry(componenttest.NewNopTelemetrySettings())
	require.NoError(t, err)
	return tel
}

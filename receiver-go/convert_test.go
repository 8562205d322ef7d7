package ebpfreceiver

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"
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

func TestConvertIgnoresUnboundMaps(t *testing.T) {
	conv, _ := loadConverter(t, filepath.Join("testdata", "convert", "gauge", "config.yaml"))
	snap := loadSnapshot(t, filepath.Join("testdata", "convert", "sum_resource_grouping", "snapshot.json"))
	assert.Equal(t, 0, conv.convert(snap).DataPointCount())
}

func TestDeltaStartTimes(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum, Temporality: TemporalityDelta,
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	assert.True(t, env.res.request.Maps[0].ClearAfterRead)

	check := func(md pmetric.Metrics, start, ts uint64) {
		t.Helper()
		require.Equal(t, 1, md.DataPointCount())
		s := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum()
		assert.Equal(t, pmetric.AggregationTemporalityDelta, s.AggregationTemporality())
		assert.True(t, s.IsMonotonic())
		assert.Equal(t, start, uint64(s.DataPoints().At(0).StartTimestamp()), "start")
		assert.Equal(t, ts, uint64(s.DataPoints().At(0).Timestamp()), "timestamp")
	}
	// First snapshot: from the attach time; then from the previous read.
	check(env.conv.convert(containerSnapshot(1, 10, 1, "a")), 1, 10)
	check(env.conv.convert(containerSnapshot(2, 20, 1, "a")), 10, 20)
	// An empty read still moves the start on (the interval had nothing).
	assert.Equal(t, 0, env.conv.convert(containerSnapshot(3, 30, 1)).DataPointCount())
	check(env.conv.convert(containerSnapshot(4, 40, 1, "a")), 30, 40)
	// A map the sidecar could not read keeps the previous start.
	failed := containerSnapshot(5, 50, 1)
	failed.Maps[0].Error = "boom"
	env.conv.convert(failed)
	check(env.conv.convert(containerSnapshot(6, 60, 1, "a")), 40, 60)
	// Re-attached: from the new attach time.
	check(env.conv.convert(containerSnapshot(7, 70, 65, "a")), 65, 70)
	// A new stream starts from the attach time again.
	conv2 := newConverter(env.res.bindings, "1.2.3", zap.NewNop(), env.conv.tel)
	check(conv2.convert(containerSnapshot(1, 80, 65, "a")), 65, 80)
}

package ebpfreceiver

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

package ebpfreceiver

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// Converters over the fake catalog (fakecatalog_fixture_test.go), with
// observed logs and self-telemetry, and the snapshots they convert.

func loadConverter(t *testing.T, configFile string) (*converter, *observer.ObservedLogs) {
	t.Helper()
	env := newConvEnv(t, loadConfig(t, configFile), testDescribe())
	return env.conv, env.logs
}

func loadConfig(t testing.TB, configFile string) *Config {
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

func newConvEnv(t testing.TB, cfg *Config, desc *sidecarpb.DescribeResponse) *convEnv {
	t.Helper()
	res, err := resolve(cfg, desc, fakeJudge(desc))
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

func loadSnapshot(t testing.TB, file string) *sidecarpb.Snapshot {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	snap := &sidecarpb.Snapshot{}
	require.NoError(t, protojson.Unmarshal(b, snap))
	return snap
}

func nopSelfTelemetry(t testing.TB) *selfTelemetry {
	t.Helper()
	tel, err := newSelfTelemetry(componenttest.NewNopTelemetrySettings())
	require.NoError(t, err)
	return tel
}

// containerSnapshot is one read of misc/by_container: one entry per
// container id, bytes = 1 each.
func containerSnapshot(seq, ts, attach uint64, ids ...string) *sidecarpb.Snapshot {
	cg := make([]uint64, len(ids))
	bytes := make([]uint64, len(ids))
	for i := range ids {
		cg[i] = uint64(i + 1)
		bytes[i] = 1
	}
	return &sidecarpb.Snapshot{Sequence: seq, TimeUnixNano: ts, Maps: []*sidecarpb.MapSnapshot{{
		Program: "misc", Map: "by_container", AttachTimeUnixNano: attach, Entries: uint32(len(ids)),
		KeyColumns: []*sidecarpb.Column{
			{Field: "cgroup_id", Uints: cg},
			{Field: "container_id", Strings: ids},
		},
		ValueColumns: []*sidecarpb.Column{{Field: "bytes", Uints: bytes}},
	}}}
}

// containerPoints returns the container.id (or "overflow") of every data
// point of md, with its value and start time.
func containerPoints(t *testing.T, md pmetric.Metrics) map[string][2]int64 {
	t.Helper()
	got := map[string][2]int64{}
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		key := "overflow"
		if v, ok := rm.Resource().Attributes().Get("container.id"); ok {
			key = v.Str()
		} else {
			require.Equal(t, 0, rm.Resource().Attributes().Len(), "the overflow resource has no attributes")
		}
		dps := rm.ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints()
		for j := 0; j < dps.Len(); j++ {
			dp := dps.At(j)
			if key == "overflow" {
				v, ok := dp.Attributes().Get("otel.metric.overflow")
				require.True(t, ok)
				require.Equal(t, pcommon.ValueTypeBool, v.Type())
				require.True(t, v.Bool())
			}
			got[key] = [2]int64{dp.IntValue(), int64(dp.StartTimestamp())}
		}
	}
	return got
}

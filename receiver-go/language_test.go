package ebpfreceiver

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// Tests of the metric-to-map language's newer keys: cardinality_limit,
// temporality, per_cpu, histogram_format and programs[].metrics.

func TestResolveProgramMetricOverrides(t *testing.T) {
	cfg := cfgWith([]ProgramConfig{
		{Name: "syscalls", Metrics: map[string]MetricOverrideConfig{
			"ebpf.syscalls": {CardinalityLimit: intp(50), Temporality: TemporalityDelta, PerCPU: true},
		}},
		{Name: "runqlat", Metrics: map[string]MetricOverrideConfig{
			"ebpf.sched.runqueue.latency": {HistogramFormat: HistogramFormatExponential},
		}},
	})
	cfg.CardinalityLimit = 7
	res, err := resolve(cfg, testDescribe())
	require.NoError(t, err)
	require.Len(t, res.bindings, 2)

	sc := res.bindings[0]
	assert.Equal(t, 50, sc.limit)
	assert.True(t, sc.delta)
	assert.True(t, sc.perCPU)
	assert.Equal(t, "programs[0].metrics[ebpf.syscalls]", sc.path)
	assert.Equal(t, attributeBinding{field: fieldRef{"cpu", tUint}, name: "cpu.logical_number"}, sc.attributes[len(sc.attributes)-1],
		"per_cpu adds the cpu column as cpu.logical_number after the catalog's attributes")

	h := res.bindings[1]
	assert.Equal(t, 7, h.limit, "the receiver's cardinality_limit is the default")
	assert.True(t, h.exponential)
	assert.Equal(t, "ns", h.unit, "exponential histograms default to the slot unit")
	assert.Equal(t, 1.0, h.scale)

	assert.True(t, proto.Equal(&sidecarpb.MapRequest{Program: "syscalls", Map: "syscalls", ClearAfterRead: true, PerCpu: true}, res.request.Maps[0]), "%v", res.request.Maps[0])
	assert.True(t, proto.Equal(&sidecarpb.MapRequest{Program: "runqlat", Map: "runq_latency"}, res.request.Maps[1]), "%v", res.request.Maps[1])
}

func TestResolveDefaultsOfNewKeys(t *testing.T) {
	res, err := resolve(cfgWith([]ProgramConfig{{Name: "runqlat"}}), testDescribe())
	require.NoError(t, err)
	b := res.bindings[0]
	assert.Equal(t, defaultCardinalityLimit, b.limit)
	assert.False(t, b.delta)
	assert.False(t, b.perCPU)
	assert.False(t, b.exponential)
	assert.True(t, proto.Equal(&sidecarpb.MapRequest{Program: "runqlat", Map: "runq_latency"}, res.request.Maps[0]))
}

func TestResolvePerCPUAttributes(t *testing.T) {
	// A per_cpu metric and one that adds the CPUs up share one per-CPU read.
	res, err := resolve(cfgWith(nil,
		MetricConfig{Name: "a", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches", PerCPU: true,
			Attributes: []AttributeConfig{{Field: "pid", Name: "process.pid"}}},
		MetricConfig{Name: "b", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches"},
		MetricConfig{Name: "c", MapName: "switches", Type: MetricTypeSum, ValueField: "voluntary", PerCPU: true,
			Attributes: []AttributeConfig{{Field: "cpu", Name: "cpu.id", Resource: true}}},
	), testDescribe())
	require.NoError(t, err)
	assert.Equal(t, []attributeBinding{
		{field: fieldRef{"pid", tUint}, name: "process.pid"},
		{field: fieldRef{"cpu", tUint}, name: "cpu.logical_number"},
	}, res.bindings[0].attributes)
	assert.Equal(t, []attributeBinding{{field: fieldRef{"pid", tUint}, name: "process.pid"}}, res.bindings[1].attributes)
	assert.Equal(t, []attributeBinding{{field: fieldRef{"cpu", tUint}, name: "cpu.id", resource: true}}, res.bindings[2].attributes,
		"attributes may name the cpu column themselves")
	require.Len(t, res.request.Maps, 2)
	assert.True(t, res.request.Maps[0].PerCpu)
	assert.True(t, res.request.Maps[1].PerCpu)
}

func TestResolveNewKeyErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
		{
			name: "override of an unknown default metric",
			cfg: cfgWith([]ProgramConfig{{Name: "syscalls", Metrics: map[string]MetricOverrideConfig{
				"ebpf.syscall": {CardinalityLimit: intp(5)},
			}}}),
			want: `programs[0].metrics[ebpf.syscall]: program "syscalls" has no default metric "ebpf.syscall"; its default metrics: ebpf.syscalls, ebpf.syscalls.errors`,
		},
		{
			name: "delta and cumulative on one map",
			cfg: cfgWith(nil,
				MetricConfig{Name: "a", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches"},
				MetricConfig{Name: "b", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time_ns", Temporality: TemporalityDelta}),
			want: `metrics[1].temporality: map oncpu/oncpu is read by delta metric b (metrics[1]) and by cumulative metric a (metrics[0]); a delta read clears the map, so every metric on a map must be delta or none; make their temporality the same`,
		},
		{
			name: "delta and gauge on one map",
			cfg: cfgWith(nil,
				MetricConfig{Name: "a", MapName: "runnable", Type: MetricTypeSum, Temporality: TemporalityDelta},
				MetricConfig{Name: "b", MapName: "runnable", Type: MetricTypeGauge}),
			want: `metrics[1].temporality: map oncpu/runnable is read by delta metric a (metrics[0]) and by gauge metric b (metrics[1]); a delta read clears the map, so every metric on a map must be delta or none; make their temporality the same`,
		},
		{
			name: "per_cpu on a map keyed by cpu",
			cfg:  cfgWith(nil, MetricConfig{Name: "a", MapName: "runnable", Type: MetricTypeGauge, PerCPU: true}),
			want: `metrics[0].per_cpu: map oncpu/runnable already has a key field "cpu", which the per-CPU column of that name would shadow; remove per_cpu (the map is keyed by CPU already)`,
		},
		{
			name: "cpu column without per_cpu",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches",
				Attributes: []AttributeConfig{{Field: "cpu", Name: "cpu"}}}),
			want: `metrics[0].attributes[0].field: "cpu" is not a key field of oncpu/oncpu (it is a key column only with per_cpu: true); valid key fields: pid`,
		},
		{
			name: "per_cpu attribute name taken",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches", PerCPU: true,
				Attributes: []AttributeConfig{{Field: "pid", Name: "cpu.logical_number"}}}),
			want: `metrics[0].attributes[0].name: "cpu.logical_number" is the attribute per_cpu adds; rename it, or list {field: cpu, name: ...} to name the CPU attribute yourself`,
		},
		{
			name: "exponential with a rescaled unit",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "runq_latency", Type: MetricTypeHistogram,
				HistogramFormat: HistogramFormatExponential, Unit: "s"}),
			want: `metrics[0].histogram_format: exponential buckets are powers of two of the slot unit "ns" and cannot be rescaled, but the metric unit is "s"; set unit to "ns", or use histogram_format explicit`,
		},
		{
			name: "exponential override on a default metric in ms",
			cfg: cfgWith([]ProgramConfig{{Name: "runqlat", Metrics: map[string]MetricOverrideConfig{
				"ebpf.sched.runqueue.latency": {HistogramFormat: HistogramFormatExponential, Unit: "ms"},
			}}}),
			want: `programs[0].metrics[ebpf.sched.runqueue.latency].histogram_format: exponential buckets are powers of two of the slot unit "ns" and cannot be rescaled, but the metric unit is "ms"; set unit to "ns", or use histogram_format explicit`,
		},
		{
			name: "exponential of linear slots",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "linear_size", Type: MetricTypeHistogram,
				HistogramFormat: HistogramFormatExponential}),
			want: `metrics[0].histogram_format: exponential needs power-of-two slots, but histogram map misc/linear_size uses slot convention SLOT_CONVENTION_LINEAR; use histogram_format explicit`,
		},
		{
			name: "histogram_format on a sum",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "runnable", Type: MetricTypeSum,
				HistogramFormat: HistogramFormatExplicit}),
			want: `metrics[0].histogram_format: applies to histograms only, and the type is sum; remove it`,
		},
		{
			name: "delta override on a sum default metric is fine",
			cfg: cfgWith([]ProgramConfig{{Name: "syscalls", Metrics: map[string]MetricOverrideConfig{
				"ebpf.syscalls": {Temporality: TemporalityDelta},
			}}}),
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolve(tt.cfg, testDescribe())
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestResolveBrokenLayouts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*sidecarpb.HistogramLayout)
		want   string
	}{
		{
			name:   "fixed bounds do not match the slots",
			mutate: func(h *sidecarpb.HistogramLayout) { h.Bounds = []float64{1, 5} },
			want:   `metrics[0].map_name: histogram map misc/fixed_wait has 4 slots but 2 fixed bounds (it needs slots-1 = 3); the sidecar's manifest is broken`,
		},
		{
			name:   "fixed bounds not increasing",
			mutate: func(h *sidecarpb.HistogramLayout) { h.Bounds = []float64{1, 5, 5} },
			want:   `metrics[0].map_name: histogram map misc/fixed_wait has fixed bounds [1 5 5] that do not increase at index 2; the sidecar's manifest is broken`,
		},
		{
			name:   "linear without a width",
			mutate: func(h *sidecarpb.HistogramLayout) { h.Convention = sidecarpb.SlotConvention_SLOT_CONVENTION_LINEAR },
			want:   `metrics[0].map_name: histogram map misc/fixed_wait uses linear slots of width 0; the width must be a positive number, so the sidecar's manifest is broken`,
		},
		{
			name:   "unknown convention",
			mutate: func(h *sidecarpb.HistogramLayout) { h.Convention = 9 },
			want:   `metrics[0].map_name: histogram map misc/fixed_wait uses slot convention 9, which this receiver does not support (supported: SLOT_CONVENTION_LOG2_BCC, SLOT_CONVENTION_LOG2_EXPONENT, SLOT_CONVENTION_LINEAR, SLOT_CONVENTION_FIXED)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desc := testDescribe()
			tt.mutate(desc.Programs[4].Maps[2].Histogram)
			_, err := resolve(cfgWith(nil, MetricConfig{Name: "a", MapName: "fixed_wait", Type: MetricTypeHistogram}), desc)
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestCardinalityLimitAcrossSnapshots(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum, CardinalityLimit: intp(2),
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	overflowLogs := func() int { return env.logs.FilterMessageSnippet("reached its cardinality limit").Len() }

	// a and b are admitted; c is folded.
	got := containerPoints(t, env.conv.convert(containerSnapshot(1, 10, 1, "a", "b", "c")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "b": {1, 1}, "overflow": {1, 1}}, got)
	assert.Equal(t, 1, overflowLogs())
	logged := env.logs.FilterMessageSnippet("reached its cardinality limit").All()[0].ContextMap()
	assert.Equal(t, "ebpf.container.bytes", logged["metric"])
	assert.Equal(t, int64(2), logged["cardinality_limit"])
	assert.Equal(t, "metrics[0]", logged["config"])

	// Admitted series keep flowing although new ones came first in the map;
	// c and d share the one overflow series. Logged once per metric.
	got = containerPoints(t, env.conv.convert(containerSnapshot(2, 20, 1, "d", "c", "b", "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "b": {1, 1}, "overflow": {2, 1}}, got)
	assert.Equal(t, 1, overflowLogs())
	assert.Equal(t, map[string]int64{"metric=ebpf.container.bytes": 3}, env.counterValues(t, metricOverflowPoints),
		"1 point folded in the first snapshot, 2 in the second")

	// Under the limit: no overflow series.
	got = containerPoints(t, env.conv.convert(containerSnapshot(3, 30, 1, "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}}, got)

	// Series that left the map (their process exited and the sidecar deleted
	// them) free their places: c is admitted now, d is folded.
	got = containerPoints(t, env.conv.convert(containerSnapshot(4, 32, 1, "c", "d", "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "c": {1, 1}, "overflow": {1, 1}}, got)
	assert.Equal(t, 1, overflowLogs())

	// A re-attached program starts the admitted set over.
	got = containerPoints(t, env.conv.convert(containerSnapshot(4, 40, 35, "c", "d", "a")))
	assert.Equal(t, map[string][2]int64{"c": {1, 35}, "d": {1, 35}, "overflow": {1, 35}}, got)
	assert.Equal(t, 2, overflowLogs(), "a new series set logs its overflow again")

	// So does a new stream (a new converter).
	conv2 := newConverter(env.res.bindings, "1.2.3", zap.NewNop(), env.conv.tel)
	got = containerPoints(t, conv2.convert(containerSnapshot(1, 50, 35, "a", "b", "c")))
	assert.Equal(t, map[string][2]int64{"a": {1, 35}, "b": {1, 35}, "overflow": {1, 35}}, got)
	assert.Equal(t, map[string]int64{"metric=ebpf.container.bytes": 6}, env.counterValues(t, metricOverflowPoints))
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

func TestMapAtCapacityIsCountedAndLoggedOncePerAttach(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum,
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	snap := func(seq, attach uint64, maxEntries uint32) *sidecarpb.Snapshot {
		s := containerSnapshot(seq, seq*10, attach, "a", "b")
		s.Maps[0].MaxEntries = maxEntries
		return s
	}
	atCapacity := func() int { return env.logs.FilterMessageSnippet("BPF map is at capacity").Len() }

	env.conv.convert(snap(1, 1, 3)) // room left
	env.conv.convert(snap(2, 1, 0)) // an array: never full
	assert.Equal(t, 0, atCapacity())
	assert.Empty(t, env.counterValues(t, metricFullMaps))

	env.conv.convert(snap(3, 1, 2))
	env.conv.convert(snap(4, 1, 2))
	assert.Equal(t, 1, atCapacity(), "logged once per attach")
	assert.Equal(t, map[string]int64{"map=by_container,program=misc": 2}, env.counterValues(t, metricFullMaps))

	env.conv.convert(snap(5, 7, 2)) // re-attached and full again
	assert.Equal(t, 2, atCapacity())
}

func TestScaleMultipliesAfterUnitConversion(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum, Scale: 4096, Unit: "By",
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	md := env.conv.convert(containerSnapshot(1, 10, 1, "a"))
	require.Equal(t, 1, md.DataPointCount())
	dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints().At(0)
	assert.Equal(t, pmetric.NumberDataPointValueTypeDouble, dp.ValueType())
	assert.Equal(t, 4096.0, dp.DoubleValue())

	for _, bad := range []float64{-1, math.Inf(1)} {
		cfg.Metrics[0].Scale = bad
		_, err := resolve(cfg, testDescribe())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "metrics[0].scale: ")
		assert.Contains(t, err.Error(), "is not a positive factor")
	}
}

package ebpfreceiver

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

func TestResolveDefaultMetrics(t *testing.T) {
	cfg := cfgWith([]ProgramConfig{
		{Name: "syscalls", Parameters: map[string]string{"per_process": "false"}},
		{Name: "runqlat"},
	})
	res, err := resolve(cfg, testDescribe(), testJudge())
	require.NoError(t, err)

	want := &sidecarpb.StreamRequest{
		Programs: []*sidecarpb.ProgramRequest{
			{Name: "syscalls", Parameters: map[string]string{"per_process": "false"}},
			{Name: "runqlat"},
		},
		Maps: []*sidecarpb.MapRequest{
			{Program: "syscalls", Map: "syscalls"},
			{Program: "runqlat", Map: "runq_latency"},
		},
		Interval:      durationpb.New(10 * time.Second),
		PackedColumns: true,
	}
	assert.True(t, proto.Equal(want, res.request), "got %v", res.request)

	require.Len(t, res.bindings, 2)
	sc := res.bindings[0]
	assert.Equal(t, "ebpf.syscalls", sc.name)
	assert.Equal(t, MetricTypeSum, sc.typ)
	assert.Equal(t, "{syscall}", sc.unit)
	assert.Equal(t, "Syscalls by process and syscall.", sc.description)
	assert.Equal(t, 1.0, sc.scale)
	assert.Equal(t, []attributeBinding{
		{field: fieldRef{"pid", tUint}, name: "process.pid", resource: true},
		{field: fieldRef{"comm", tStr}, name: "process.executable.name", resource: true},
		{field: fieldRef{"syscall", tStr}, name: "system.syscall.name"},
	}, sc.attributes)

	h := res.bindings[1]
	assert.Equal(t, MetricTypeHistogram, h.typ)
	assert.Equal(t, "s", h.unit, "histogram of ns defaults to seconds")
	assert.Equal(t, 1e-9, h.scale)
	assert.Equal(t, uint32(6), h.slots)
	assert.True(t, h.hasSum)
	// Default attributes: every key field but the slot.
	assert.Equal(t, []attributeBinding{{field: fieldRef{"comm", tStr}, name: "process.executable.name"}}, h.attributes)
}

func TestResolveMetricsAddPrograms(t *testing.T) {
	cfg := cfgWith(
		[]ProgramConfig{{Name: "runqlat"}},
		MetricConfig{Name: "ebpf.cpu.time", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time_ns"},
		MetricConfig{Name: "ebpf.cpu.time.ms", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time_ns", Unit: "ms"},
		MetricConfig{Name: "ebpf.cpu.switches", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches", Unit: "{context_switch}"},
		MetricConfig{Name: "ebpf.syscalls", MapName: "syscalls", Program: "syscount", Type: MetricTypeSum},
	)
	res, err := resolve(cfg, testDescribe(), testJudge())
	require.NoError(t, err)
	// runqlat is listed (and loaded) although no metric reads it; oncpu and
	// syscount are added because metrics read them.
	var programs []string
	for _, p := range res.request.Programs {
		programs = append(programs, p.Name)
	}
	assert.Equal(t, []string{"runqlat", "oncpu", "syscount"}, programs)
	assert.Len(t, res.request.Maps, 2, "one MapRequest per distinct (program, map)")

	assert.Equal(t, "s", res.bindings[0].unit)
	assert.Equal(t, 1e-9, res.bindings[0].scale)
	assert.Equal(t, "ms", res.bindings[1].unit)
	assert.InDelta(t, 1e-6, res.bindings[1].scale, 1e-18)
	assert.Equal(t, "{context_switch}", res.bindings[2].unit)
	assert.Equal(t, 1.0, res.bindings[2].scale)
	assert.Equal(t, []attributeBinding{{field: fieldRef{"pid", tUint}, name: "process.pid"}}, res.bindings[0].attributes)
}

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
	res, err := resolve(cfg, testDescribe(), testJudge())
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

// Errors of the programs, their default metrics and overrides, and of
// metrics that share a map.
func TestResolveErrors(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
		{
			name: "unknown program",
			cfg:  cfgWith([]ProgramConfig{{Name: "syscalls"}, {Name: "biolatency"}}),
			want: `programs[1].name: unknown program "biolatency"; valid programs: syscalls, syscount, oncpu, runqlat, misc`,
		},
		{
			name: "program without default metrics",
			cfg:  cfgWith([]ProgramConfig{{Name: "oncpu"}}),
			want: `programs: program "oncpu" has no default metrics in the sidecar's catalog; list the metrics to emit under metrics`,
		},
		{
			name: "duplicate names across default metrics and config",
			cfg: cfgWith(nil,
				MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeGauge},
				MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeSum}),
			want: `metrics[1].name: "x" is also emitted by metrics[0]; metric names must be unique`,
		},
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
			name: "delta override on a sum default metric is fine",
			cfg: cfgWith([]ProgramConfig{{Name: "syscalls", Metrics: map[string]MetricOverrideConfig{
				"ebpf.syscalls": {Temporality: TemporalityDelta},
			}}}),
			want: "",
		},
	})
}

func TestResolveJoinsErrors(t *testing.T) {
	cfg := cfgWith([]ProgramConfig{{Name: "nope"}},
		MetricConfig{Name: "a", MapName: "nomap", Type: MetricTypeSum},
		MetricConfig{Name: "b", MapName: "oncpu", Type: MetricTypeGauge, ValueField: "bad"})
	_, err := resolve(cfg, testDescribe(), testJudge())
	require.Error(t, err)
	assert.ErrorContains(t, err, `programs[0].name: unknown program "nope"`)
	assert.ErrorContains(t, err, `metrics[0].map_name: no catalog program has a map "nomap"`)
	assert.ErrorContains(t, err, `metrics[1].value_field: map oncpu/oncpu has no value field "bad"`)
}

// Default metrics follow the maps the judge says the parameters compile in;
// a metric on a compiled-out map is refused with the judge's words, at the
// metric's map_name.
func TestResolveFollowsTheJudgesCompiledInMaps(t *testing.T) {
	// Default: errors is off, so its default metric is left out.
	res, err := resolve(cfgWith([]ProgramConfig{{Name: "syscalls"}}), testDescribe(), testJudge())
	require.NoError(t, err)
	require.Len(t, res.bindings, 1)
	assert.Equal(t, "ebpf.syscalls", res.bindings[0].name)

	// Turned on (the judge compiles the map in): both default metrics, both maps.
	res, err = resolve(cfgWith([]ProgramConfig{{Name: "syscalls", Parameters: map[string]string{"errors": "true"}}}), testDescribe(), fakeJudge(testDescribe()))
	require.NoError(t, err)
	require.Len(t, res.bindings, 2)
	assert.Equal(t, "ebpf.syscalls.errors", res.bindings[1].name)
	assert.Len(t, res.request.Maps, 2)

	// A metric on the compiled-out map fails at start, at its map_name.
	_, err = resolve(cfgWith([]ProgramConfig{{Name: "runqlat"}, {Name: "syscalls"}},
		MetricConfig{Name: "x", MapName: "errors", Type: MetricTypeSum}), testDescribe(), testJudge())
	assert.EqualError(t, err, `metrics[0].map_name: map syscalls/errors exists only when parameter 'errors' of program 'syscalls' is true, and it is false; set that parameter to true`)
}

// The judge's findings name request fields; the receiver reports them at
// the config fields the request parts came from.
func TestResolveReportsTheJudgesFindingsAtConfigPaths(t *testing.T) {
	findings := []*sidecarpb.FieldError{
		{Field: "interval", Message: "too short"},
		{Field: "programs[1].parameters.max_entries", Message: "7 is out of range; use 128..1048576"},
		{Field: "programs[0].name", Message: "unknown"},
	}
	judgeOnce := func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		return &sidecarpb.PlanResponse{Errors: findings}, nil
	}
	// programs[1] is listed twice: the request's second program is the config's programs[2].
	cfg := cfgWith([]ProgramConfig{{Name: "runqlat"}, {Name: "runqlat"}, {Name: "syscalls"}})
	_, err := resolve(cfg, testDescribe(), judgeOnce)
	assert.EqualError(t, err, "collection_interval: too short\n"+
		"programs[2].parameters.max_entries: 7 is out of range; use 128..1048576\n"+
		"programs[0].name: unknown")

	// A map request's findings land on the first metric that reads the map;
	// a program loaded only for a metric is named through that metric.
	var second *sidecarpb.StreamRequest
	judgeMaps := func(req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		if len(req.GetMaps()) == 0 {
			return &sidecarpb.PlanResponse{}, nil
		}
		second = req
		return &sidecarpb.PlanResponse{Errors: []*sidecarpb.FieldError{
			{Field: "maps[0].map", Message: "compiled out"},
			{Field: "maps[0].per_cpu", Message: "not per-CPU"},
			{Field: "programs[0].parameters.x", Message: "bad"},
		}}, nil
	}
	_, err = resolve(cfgWith(nil, MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeGauge}), testDescribe(), judgeMaps)
	require.NotNil(t, second)
	assert.EqualError(t, err, "metrics[0].map_name: compiled out\n"+
		"metrics[0].per_cpu: not per-CPU\n"+
		`metrics[0] (program "oncpu", loaded for it).parameters.x: bad`)
}

// A judge that cannot be asked stops resolution with its error.
func TestResolveStopsWhenTheJudgeCannotBeAsked(t *testing.T) {
	broken := func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		return nil, errors.New("connection refused")
	}
	_, err := resolve(cfgWith([]ProgramConfig{{Name: "syscalls"}}), testDescribe(), broken)
	assert.EqualError(t, err, "connection refused")
}

package ebpfreceiver

import (
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
	res, err := resolve(cfg, testDescribe())
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
		Interval: durationpb.New(10 * time.Second),
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
	res, err := resolve(cfg, testDescribe())
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

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
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
			name: "unknown map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscall", Type: MetricTypeSum}),
			want: `metrics[0].map_name: no catalog program has a map "syscall"; valid maps (program/map): syscalls/syscalls, syscalls/errors, syscount/syscalls, oncpu/oncpu, oncpu/switches, oncpu/runnable, runqlat/runq_latency, misc/exp_latency, misc/linear_size, misc/fixed_wait, misc/by_container`,
		},
		{
			name: "ambiguous map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscalls", Type: MetricTypeSum}),
			want: `metrics[0].map_name: map "syscalls" exists in programs syscalls, syscount; set metrics[0].program to one of them`,
		},
		{
			name: "unknown metric program",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscalls", Program: "sys", Type: MetricTypeSum}),
			want: `metrics[0].program: unknown program "sys"; valid programs: syscalls, syscount, oncpu, runqlat, misc`,
		},
		{
			name: "map not in the named program",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Program: "syscalls", Type: MetricTypeSum}),
			want: `metrics[0].map_name: program "syscalls" has no map "oncpu"; its maps: syscalls, errors`,
		},
		{
			name: "value field needed",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Type: MetricTypeSum}),
			want: `metrics[0].value_field: map oncpu/oncpu has 2 value fields; set value_field to one of: time_ns, switches`,
		},
		{
			name: "unknown value field",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time"}),
			want: `metrics[0].value_field: map oncpu/oncpu has no value field "time"; valid value fields: time_ns, switches`,
		},
		{
			name: "value_attribute field unknown and of another unit",
			cfg: cfgWith(nil, MetricConfig{Name: "x", MapName: "switches", Type: MetricTypeSum,
				ValueAttribute: &ValueAttributeConfig{Name: "t", Fields: []ValueFieldConfig{
					{Field: "voluntary", Value: "v"}, {Field: "wait_ns", Value: "w"}, {Field: "nope", Value: "n"}, {Field: "comm", Value: "c"},
				}}}),
			want: "metrics[0].value_attribute.fields[1].field: \"wait_ns\" is in \"ns\" but the first field is in \"{context_switch}\"; one metric has one unit\n" +
				"metrics[0].value_attribute.fields[2].field: map oncpu/switches has no value field \"nope\"; valid value fields: voluntary, involuntary, wait_ns, comm\n" +
				"metrics[0].value_attribute.fields[3].field: field \"comm\" of oncpu/switches is FIELD_TYPE_STRING, not a number; choose a numeric value field",
		},
		{
			name: "unknown attribute field",
			cfg: cfgWith(nil, MetricConfig{
				Name: "x", MapName: "syscalls", Program: "syscalls", Type: MetricTypeSum,
				Attributes: []AttributeConfig{{Field: "tgid", Name: "process.pid"}},
			}),
			want: `metrics[0].attributes[0].field: "tgid" is not a key field of syscalls/syscalls; valid key fields: pid, comm, syscall`,
		},
		{
			name: "value field as attribute",
			cfg: cfgWith(nil, MetricConfig{
				Name: "x", MapName: "syscalls", Program: "syscalls", Type: MetricTypeSum,
				Attributes: []AttributeConfig{{Field: "count", Name: "n"}},
			}),
			want: `metrics[0].attributes[0].field: "count" is not a key field of syscalls/syscalls (it is a value field); valid key fields: pid, comm, syscall`,
		},
		{
			name: "slot field as attribute",
			cfg: cfgWith(nil, MetricConfig{
				Name: "x", MapName: "runq_latency", Type: MetricTypeHistogram,
				Attributes: []AttributeConfig{{Field: "slot", Name: "slot"}},
			}),
			want: `metrics[0].attributes[0].field: "slot" is the histogram slot field of runqlat/runq_latency and becomes the buckets, not an attribute; valid key fields: comm`,
		},
		{
			name: "histogram of a counters map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeHistogram}),
			want: `metrics[0].type: histogram needs a histogram map, but oncpu/runnable is a counters map; set type to sum or gauge`,
		},
		{
			name: "sum of a histogram map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "runq_latency", Type: MetricTypeSum}),
			want: `metrics[0].type: runqlat/runq_latency is a histogram map, so "sum" is not possible; set type to histogram`,
		},
		{
			name: "duration into a non-duration unit",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time_ns", Unit: "By"}),
			want: `metrics[0].unit: "By" cannot express a duration measured in "ns"; use s (recommended), ms, us or ns, or leave unit empty for s`,
		},
		{
			name: "duplicate names across default metrics and config",
			cfg: cfgWith(nil,
				MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeGauge},
				MetricConfig{Name: "x", MapName: "runnable", Type: MetricTypeSum}),
			want: `metrics[1].name: "x" is also emitted by metrics[0]; metric names must be unique`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolve(tt.cfg, testDescribe())
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestResolveJoinsErrors(t *testing.T) {
	cfg := cfgWith([]ProgramConfig{{Name: "nope"}},
		MetricConfig{Name: "a", MapName: "nomap", Type: MetricTypeSum},
		MetricConfig{Name: "b", MapName: "oncpu", Type: MetricTypeGauge, ValueField: "bad"})
	_, err := resolve(cfg, testDescribe())
	require.Error(t, err)
	assert.ErrorContains(t, err, `programs[0].name: unknown program "nope"`)
	assert.ErrorContains(t, err, `metrics[0].map_name: no catalog program has a map "nomap"`)
	assert.ErrorContains(t, err, `metrics[1].value_field: map oncpu/oncpu has no value field "bad"`)
}

func TestUnitScale(t *testing.T) {
	tests := []struct {
		from, to string
		scale    float64
		err      bool
	}{
		{"ns", "s", 1e-9, false},
		{"us", "s", 1e-6, false},
		{"ms", "s", 1e-3, false},
		{"s", "s", 1, false},
		{"ns", "ns", 1, false},
		{"By", "By", 1, false},
		{"1", "{syscall}", 1, false},
		{"", "{packet}", 1, false},
		{"ns", "By", 0, true},
		{"By", "s", 0, true},
	}
	for _, tt := range tests {
		got, err := unitScale(tt.from, tt.to)
		if tt.err {
			assert.Error(t, err, "%s -> %s", tt.from, tt.to)
			continue
		}
		require.NoError(t, err, "%s -> %s", tt.from, tt.to)
		assert.InDelta(t, tt.scale, got, tt.scale*1e-12, "%s -> %s", tt.from, tt.to)
	}
	assert.Equal(t, "s", defaultMetricUnit("ns"))
	assert.Equal(t, "s", defaultMetricUnit("us"))
	assert.Equal(t, "By", defaultMetricUnit("By"))
}

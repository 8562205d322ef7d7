package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolvePerCPUAttributes(t *testing.T) {
	// A per_cpu metric and one that adds the CPUs up share one per-CPU read.
	res, err := resolve(cfgWith(nil,
		MetricConfig{Name: "a", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches", PerCPU: true,
			Attributes: []AttributeConfig{{Field: "pid", Name: "process.pid"}}},
		MetricConfig{Name: "b", MapName: "oncpu", Type: MetricTypeSum, ValueField: "switches"},
		MetricConfig{Name: "c", MapName: "switches", Type: MetricTypeSum, ValueField: "voluntary", PerCPU: true,
			Attributes: []AttributeConfig{{Field: "cpu", Name: "cpu.id", Resource: true}}},
	), testDescribe(), testJudge())
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

// Errors binding key fields (and the per-CPU column) as attributes.
func TestAttributeErrors(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
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
	})
}

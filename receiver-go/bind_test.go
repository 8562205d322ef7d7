package ebpfreceiver

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

func TestResolveDefaultsOfNewKeys(t *testing.T) {
	res, err := resolve(cfgWith([]ProgramConfig{{Name: "runqlat"}}), testDescribe(), testJudge())
	require.NoError(t, err)
	b := res.bindings[0]
	assert.Equal(t, defaultCardinalityLimit, b.limit)
	assert.False(t, b.delta)
	assert.False(t, b.perCPU)
	assert.False(t, b.exponential)
	assert.True(t, proto.Equal(&sidecarpb.MapRequest{Program: "runqlat", Map: "runq_latency"}, res.request.Maps[0]))
}

// Errors binding a metric to the value fields and kind of its map.
func TestBindMetricErrors(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
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
			name: "histogram_format on a sum",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "runnable", Type: MetricTypeSum,
				HistogramFormat: HistogramFormatExplicit}),
			want: `metrics[0].histogram_format: applies to histograms only, and the type is sum; remove it`,
		},
	})
}

// The receiver keeps one counter per slot and series: a catalog declaring
// more slots than any histogram needs is refused, not allocated.
func TestResolveRefusesUnboundedHistogramSlots(t *testing.T) {
	for _, slots := range []uint32{0, maxHistogramSlots + 1, 1 << 31} {
		desc := testDescribe()
		h := desc.Programs[4].Maps[2].Histogram
		h.Slots, h.Bounds = slots, nil
		h.Convention = sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC
		_, err := resolve(cfgWith(nil, MetricConfig{Name: "a", MapName: "fixed_wait", Type: MetricTypeHistogram}), desc, fakeJudge(desc))
		assert.ErrorContains(t, err, fmt.Sprintf("histogram map misc/fixed_wait declares %d slots, and a histogram has 1 to %d; the sidecar's manifest is broken", slots, maxHistogramSlots))
	}
}

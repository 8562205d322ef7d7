package ebpfreceiver

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

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

// Errors of a metric unit the raw unit cannot become.
func TestUnitErrors(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
		{
			name: "duration into a non-duration unit",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Type: MetricTypeSum, ValueField: "time_ns", Unit: "By"}),
			want: `metrics[0].unit: "By" cannot express a duration measured in "ns"; use s (recommended), ms, us or ns, or leave unit empty for s`,
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
	})
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
		_, err := resolve(cfg, testDescribe(), testJudge())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "metrics[0].scale: ")
		assert.Contains(t, err.Error(), "is not a positive factor")
	}
}

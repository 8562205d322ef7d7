package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

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
			want:   `metrics[0].map_name: histogram map misc/fixed_wait uses slot convention 9, which this receiver does not support (supported: SLOT_CONVENTION_LOG2_BCC, SLOT_CONVENTION_LOG2_EXPONENT, SLOT_CONVENTION_LINEAR, SLOT_CONVENTION_FIXED, SLOT_CONVENTION_EXPONENTIAL)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desc := testDescribe()
			tt.mutate(desc.Programs[4].Maps[2].Histogram)
			_, err := resolve(cfgWith(nil, MetricConfig{Name: "a", MapName: "fixed_wait", Type: MetricTypeHistogram}), desc, fakeJudge(desc))
			assert.EqualError(t, err, tt.want)
		})
	}
}

// An exponential histogram needs power-of-two slots.
func TestHistogramFormatFitsTheLayout(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
		{
			name: "exponential of linear slots",
			cfg: cfgWith(nil, MetricConfig{Name: "a", MapName: "linear_size", Type: MetricTypeHistogram,
				HistogramFormat: HistogramFormatExponential}),
			want: `metrics[0].histogram_format: exponential needs power-of-two or exponential slots, but histogram map misc/linear_size uses slot convention SLOT_CONVENTION_LINEAR; use histogram_format explicit`,
		},
	})
}

package ebpfreceiver

import (
	"fmt"
	"math"
	"math/big"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// otelIndex is OpenTelemetry's bucket index of v >= 1 at scale s, exactly:
// the i with 2^(i/2^s) < v <= 2^((i+1)/2^s), i.e. 2^i < v^(2^s) <= 2^(i+1),
// so i = bitlen(v^(2^s) - 1) - 1 (the reference ebpfreceiver.h's exp_index
// is tested against in the kernel).
func otelIndex(v uint64, scale int32) int32 {
	p := new(big.Int).Exp(new(big.Int).SetUint64(v), big.NewInt(int64(1)<<scale), nil)
	return int32(p.Sub(p, big.NewInt(1)).BitLen()) - 1 //nolint:gosec // at most 64 << 3
}

// expSlot is SLOT_CONVENTION_EXPONENTIAL (as exp_slot() fills it) for a
// histogram of n slots at scale s from index offset o.
func expSlot(v uint64, scale, offset int32, n uint32) uint64 {
	if v <= 1 || otelIndex(v, scale) < offset {
		return 0
	}
	return uint64(min(otelIndex(v, scale)-offset+1, int32(n)-1)) //nolint:gosec // n <= maxHistogramSlots
}

const (
	expScale  = 2
	expOffset = 40 // 2^10: slot 0 holds up to 1024 units
	expSlots  = 14 // indexes 40..52: up to 2^(53/4) ≈ 9741
)

// expDescribe is the test catalog with a misc/fine_latency map laid out as the
// catalog's latency maps are at histogram_scale 2 (but fewer slots).
func expDescribe() *sidecarpb.DescribeResponse {
	desc := testDescribe()
	misc := desc.Programs[4]
	misc.Maps = append(misc.Maps, histMap("fine_latency", sidecarpb.SlotConvention_SLOT_CONVENTION_EXPONENTIAL, expSlots, "ns",
		func(h *sidecarpb.HistogramLayout) { h.Scale, h.IndexOffset = expScale, expOffset }))
	return desc
}

func expValues() []uint64 {
	vs := []uint64{0, 1, 2, 1023, 1024, 1025, 1 << 20, math.MaxUint64}
	for i := int32(expOffset); i <= expOffset+expSlots; i++ {
		// Around every bucket edge 2^(i/4): floor and its neighbours.
		edge := uint64(math.Floor(math.Exp2(float64(i) / 4)))
		vs = append(vs, edge-1, edge, edge+1)
	}
	return vs
}

// Explicit buckets of exponential slots: bounds 2^((o+s)/4), and a sample
// of slot s lies in (bound[s-1], bound[s]], exactly OpenTelemetry's bucket.
func TestExponentialSlotsAsExplicitBuckets(t *testing.T) {
	desc := expDescribe()
	for _, v := range expValues() {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			slot := expSlot(v, expScale, expOffset, expSlots)
			m := oneSample(t, desc, MetricConfig{Name: "h", MapName: "fine_latency", Type: MetricTypeHistogram}, "misc", nil, slot, v)
			dp := m.Histogram().DataPoints().At(0)
			bounds := dp.ExplicitBounds().AsRaw()
			require.Len(t, bounds, expSlots-1)
			for s, b := range bounds {
				assert.InEpsilon(t, math.Exp2(float64(expOffset+s)/4)*1e-9, b, 1e-12, "bound %d", s)
			}
			b := bucketOf(t, dp)
			assert.Equal(t, int(slot), b)
			f := float64(v) * 1e-9
			if b < len(bounds) {
				assert.LessOrEqual(t, f, bounds[b]*(1+1e-12))
			}
			if b > 0 {
				assert.Greater(t, f, bounds[b-1]*(1-1e-12))
			}
		})
	}
}

// Exponential output of exponential slots: scale 2, the zero bucket with
// threshold 2^(o/4), and every sample in OpenTelemetry's own index for it.
func TestExponentialSlotsAsExponentialHistogram(t *testing.T) {
	desc := expDescribe()
	cfg := MetricConfig{Name: "h", MapName: "fine_latency", Type: MetricTypeHistogram, HistogramFormat: HistogramFormatExponential}
	for _, v := range expValues() {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			m := oneSample(t, desc, cfg, "misc", nil, expSlot(v, expScale, expOffset, expSlots), v)
			require.Equal(t, pmetric.MetricTypeExponentialHistogram, m.Type())
			assert.Equal(t, "ns", m.Unit())
			dp := m.ExponentialHistogram().DataPoints().At(0)
			assert.Equal(t, int32(expScale), dp.Scale())
			assert.Equal(t, int32(expOffset), dp.Positive().Offset())
			assert.Equal(t, 1024.0, dp.ZeroThreshold())
			assert.Equal(t, expSlots-1, dp.Positive().BucketCounts().Len())
			assert.Equal(t, uint64(1), dp.Count())
			if v <= 1024 {
				assert.Equal(t, uint64(1), dp.ZeroCount(), "[0, zero threshold] is the zero bucket")
				return
			}
			assert.Equal(t, uint64(0), dp.ZeroCount())
			want := min(otelIndex(v, expScale), expOffset+expSlots-2) // the last slot holds everything above
			for i, c := range dp.Positive().BucketCounts().AsRaw() {
				if c != 0 {
					assert.Equal(t, want, dp.Positive().Offset()+int32(i)) //nolint:gosec // i < expSlots
				}
			}
		})
	}
}

// A histogram's layout follows the program's parameters: the receiver binds
// to the maps as the judge plans them for the config, not to Describe's
// (the defaults').
func TestHistogramLayoutComesFromThePlan(t *testing.T) {
	desc := expDescribe()
	base := fakeJudge(desc)
	planned := func(req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		resp, err := base(req)
		if err != nil {
			return nil, err
		}
		for _, pp := range resp.GetPrograms() {
			if pp.GetName() != "misc" || pp.GetParameters()["histogram_scale"] != "3" {
				continue
			}
			for i, m := range pp.GetMaps() {
				if m.GetName() == "fine_latency" {
					pp.Maps[i] = histMap("fine_latency", sidecarpb.SlotConvention_SLOT_CONVENTION_EXPONENTIAL, 2*expSlots, "ns",
						func(h *sidecarpb.HistogramLayout) { h.Scale, h.IndexOffset = 3, 2*expOffset })
				}
			}
		}
		return resp, nil
	}
	cfg := cfgWith(nil, MetricConfig{Name: "h", MapName: "fine_latency", Type: MetricTypeHistogram, HistogramFormat: HistogramFormatExponential})
	cfg.Programs = []ProgramConfig{{Name: "misc", Parameters: map[string]string{"histogram_scale": "3"}}}
	res, err := resolve(cfg, desc, planned)
	require.NoError(t, err)
	require.Len(t, res.bindings, 1)
	b := res.bindings[0]
	assert.Equal(t, uint32(2*expSlots), b.slots)
	assert.Equal(t, int32(3), b.expScale)
	assert.Equal(t, int32(2*expOffset), b.indexOffset)
	assert.Equal(t, 1024.0, b.zeroThreshold)
	assert.Len(t, b.bounds, 2*expSlots-1)
}

func TestExponentialLayoutOutOfRange(t *testing.T) {
	desc := expDescribe()
	desc.Programs[4].Maps[len(desc.Programs[4].Maps)-1].Histogram.Scale = 21
	_, err := resolve(cfgWith(nil, MetricConfig{Name: "h", MapName: "fine_latency", Type: MetricTypeHistogram}), desc, fakeJudge(desc))
	assert.EqualError(t, err, "metrics[0].map_name: histogram map misc/fine_latency uses exponential slots at scale 21 with 14 slots; OpenTelemetry's scales for finer-than-log2 buckets are 1 to 20, and a zero slot and one bucket need 2 slots, so the sidecar's manifest is broken")
}

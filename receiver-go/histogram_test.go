package ebpfreceiver

import (
	"fmt"
	"math"
	"math/bits"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// log2BCCSlot is SLOT_CONVENTION_LOG2_BCC as the proto defines it (BCC's
// bpf_log2l): slot 1 holds 0 and 1, slot s >= 2 holds [2^(s-1), 2^s).
// Before clamping into the last slot, that is the bit length of the value,
// but 1 for 0.
func log2BCCSlot(v uint64) uint64 { return uint64(max(bits.Len64(v), 1)) }

const edgeSlots = 12

// histogramOf converts one sample of value v (in ns) through a 12-slot
// histogram whose metric unit is ns (scale 1), and returns the data point.
func histogramOf(t *testing.T, v uint64, unit string) pmetric.HistogramDataPoint {
	t.Helper()
	desc := testDescribe()
	desc.Programs[3].Maps[0].Histogram.Slots = edgeSlots
	cfg := cfgWith(nil, MetricConfig{
		Name: "h", MapName: "runq_latency", Type: MetricTypeHistogram, Unit: unit,
		Attributes: []AttributeConfig{{Field: "comm", Name: "process.executable.name"}},
	})
	res, err := resolve(cfg, desc, fakeJudge(desc))
	require.NoError(t, err)
	conv := newConverter(res.bindings, "test", zap.NewNop(), nopSelfTelemetry(t))
	md := conv.convert(&sidecarpb.Snapshot{
		Sequence: 1, TimeUnixNano: 2000, Maps: []*sidecarpb.MapSnapshot{{
			Program: "runqlat", Map: "runq_latency", AttachTimeUnixNano: 1000, Entries: 1,
			KeyColumns: []*sidecarpb.Column{
				{Field: "comm", Strings: []string{"x"}},
				{Field: "slot", Uints: []uint64{log2BCCSlot(v)}},
			},
			ValueColumns: []*sidecarpb.Column{
				{Field: "count", Uints: []uint64{1}},
				{Field: "sum", Uints: []uint64{v}},
			},
		}},
	})
	require.Equal(t, 1, md.DataPointCount())
	h := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Histogram()
	assert.Equal(t, pmetric.AggregationTemporalityCumulative, h.AggregationTemporality())
	return h.DataPoints().At(0)
}

func bucketOf(t *testing.T, dp pmetric.HistogramDataPoint) int {
	t.Helper()
	found := -1
	for i, c := range dp.BucketCounts().AsRaw() {
		if c == 0 {
			continue
		}
		require.Equal(t, -1, found, "one sample landed in two buckets")
		require.Equal(t, uint64(1), c)
		found = i
	}
	require.NotEqual(t, -1, found, "sample landed in no bucket")
	return found
}

func TestHistogramBucketEdges(t *testing.T) {
	type edge struct {
		v      uint64
		bucket int
	}
	edges := []edge{{0, 1}, {1, 1}, {2, 2}, {3, 2}, {4, 3}, {5, 3}, {7, 3}, {8, 4}}
	for k := 1; k <= edgeSlots-2; k++ {
		edges = append(edges,
			edge{1<<k - 1, k},   // last value of slot k
			edge{1 << k, k + 1}, // first value of slot k+1
		)
	}
	// Everything from 2^(slots-2) up sits in the last slot: the +Inf bucket.
	edges = append(edges,
		edge{1 << (edgeSlots - 2), edgeSlots - 1},
		edge{1 << (edgeSlots + 5), edgeSlots - 1},
		edge{math.MaxUint32, edgeSlots - 1})

	for _, e := range edges {
		t.Run(fmt.Sprint(e.v), func(t *testing.T) {
			dp := histogramOf(t, e.v, "ns")
			bounds := dp.ExplicitBounds().AsRaw()
			require.Len(t, bounds, edgeSlots-1)
			require.Len(t, dp.BucketCounts().AsRaw(), edgeSlots)
			b := bucketOf(t, dp)
			assert.Equal(t, e.bucket, b)

			// The bucket's range is [bounds[b-1], bounds[b]) in slot terms:
			// upper edge exclusive, lower edge inclusive (the one
			// difference to OpenTelemetry's nominal (lower, upper], see
			// histogram.go).
			v := float64(e.v)
			if b < len(bounds) {
				assert.Less(t, v, bounds[b], "value below the bucket's upper bound")
			}
			// bpf_log2l(0) = 1: 0 shares slot 1, [1, 2), with 1.
			if b > 0 && b < len(bounds) && e.v != 0 {
				assert.GreaterOrEqual(t, v, bounds[b-1], "value at or above the bucket's lower bound")
			}
			assert.Equal(t, uint64(1), dp.Count())
			assert.Equal(t, v, dp.Sum())
			assert.Equal(t, uint64(1000), uint64(dp.StartTimestamp()))
			assert.Equal(t, uint64(2000), uint64(dp.Timestamp()))
		})
	}
}

func TestHistogramBoundsScaled(t *testing.T) {
	assert.Equal(t, []float64{1, 2, 4, 8, 16}, log2Bounds(6, 0))
	assert.Equal(t, []float64{2, 4, 8, 16, 32}, log2Bounds(6, 1))
	assert.Equal(t, []float64{2.5, 5, 7.5}, linearBounds(4, 2.5))
	assert.Nil(t, log2Bounds(1, 0))
	assert.Nil(t, log2Bounds(0, 0))
	assert.Nil(t, linearBounds(1, 1))

	dp := histogramOf(t, 1500, "s")
	bounds := dp.ExplicitBounds().AsRaw()
	for s, b := range bounds {
		assert.Equal(t, math.Ldexp(1, s)*1e-9, b, "bound %d", s)
	}
	assert.Equal(t, 11, bucketOf(t, dp), "1500 ns is in slot 11 = [1024, 2048) ns")
	assert.InDelta(t, 1.5e-6, dp.Sum(), 1e-18)

	us := histogramOf(t, 1500, "us")
	assert.InDelta(t, 1.024, us.ExplicitBounds().At(10), 1e-12)
}

func TestClampSlot(t *testing.T) {
	assert.Equal(t, 0, clampSlot(-3, 6))
	assert.Equal(t, 0, clampSlot(0, 6))
	assert.Equal(t, 5, clampSlot(5, 6))
	assert.Equal(t, 5, clampSlot(6, 6))
	assert.Equal(t, 5, clampSlot(64, 6))
}

// oneSample converts one sample of value v in slot slot of histogram map
// misc/<mapName> (keyed by slot only) and returns the metric.
func oneSample(t *testing.T, desc *sidecarpb.DescribeResponse, m MetricConfig, program string, keys []*sidecarpb.Column, slot, v uint64) pmetric.Metric {
	t.Helper()
	res, err := resolve(cfgWith(nil, m), desc, fakeJudge(desc))
	require.NoError(t, err)
	conv := newConverter(res.bindings, "test", zap.NewNop(), nopSelfTelemetry(t))
	md := conv.convert(&sidecarpb.Snapshot{
		Sequence: 1, TimeUnixNano: 2000, Maps: []*sidecarpb.MapSnapshot{{
			Program: program, Map: m.MapName, AttachTimeUnixNano: 1000, Entries: 1,
			KeyColumns: append(keys, &sidecarpb.Column{Field: "slot", Uints: []uint64{slot}}),
			ValueColumns: []*sidecarpb.Column{
				{Field: "count", Uints: []uint64{1}},
				{Field: "sum", Uints: []uint64{v}},
			},
		}},
	})
	require.Equal(t, 1, md.DataPointCount())
	return md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0)
}

// Explicit buckets of the other conventions, at every edge: bucket b of a
// sample is its slot; the sample lies in [bounds[b-1], bounds[b]) for the
// log2 and linear conventions (lower edge inclusive, as their slots) and in
// (bounds[b-1], bounds[b]] for FIXED (exactly OpenTelemetry's buckets).
func TestHistogramOtherConventionEdges(t *testing.T) {
	expSlot := func(v uint64) uint64 { return uint64(max(bits.Len64(v)-1, 0)) } // 0 joins 1 in slot 0
	fixed := []float64{1, 5, 25}
	fixedSlot := func(v uint64) uint64 {
		for i, b := range fixed {
			if float64(v) <= b {
				return uint64(i)
			}
		}
		return uint64(len(fixed))
	}
	tests := []struct {
		name      string
		mapName   string
		unit      string
		slots     int
		slotOf    func(uint64) uint64
		values    []uint64
		upperIncl bool // FIXED: the bound belongs to the bucket below
		bounds    []float64
	}{
		{
			name: "log2 exponent", mapName: "exp_latency", unit: "us", slots: 8, slotOf: expSlot,
			values: []uint64{0, 1, 2, 3, 4, 7, 8, 15, 16, 127, 128, 129, 1 << 20},
			bounds: []float64{2, 4, 8, 16, 32, 64, 128},
		},
		{
			name: "linear", mapName: "linear_size", unit: "By", slots: 5, slotOf: func(v uint64) uint64 { return v / 512 },
			values: []uint64{0, 1, 511, 512, 513, 1023, 1024, 2047, 2048, 2049, 1 << 30},
			bounds: []float64{512, 1024, 1536, 2048},
		},
		{
			name: "fixed", mapName: "fixed_wait", unit: "ms", slots: 4, slotOf: fixedSlot, upperIncl: true,
			values: []uint64{0, 1, 2, 4, 5, 6, 24, 25, 26, 1000},
			bounds: []float64{1, 5, 25},
		},
	}
	for _, tt := range tests {
		for _, v := range tt.values {
			t.Run(fmt.Sprintf("%s/%d", tt.name, v), func(t *testing.T) {
				m := oneSample(t, testDescribe(), MetricConfig{Name: "h", MapName: tt.mapName, Type: MetricTypeHistogram, Unit: tt.unit},
					"misc", nil, tt.slotOf(v), v)
				dp := m.Histogram().DataPoints().At(0)
				bounds := dp.ExplicitBounds().AsRaw()
				require.Equal(t, tt.bounds, bounds)
				require.Len(t, dp.BucketCounts().AsRaw(), tt.slots)
				b := bucketOf(t, dp)
				assert.Equal(t, int(min(tt.slotOf(v), uint64(tt.slots-1))), b)
				f := float64(v)
				if tt.upperIncl {
					if b < len(bounds) {
						assert.LessOrEqual(t, f, bounds[b])
					}
					if b > 0 {
						assert.Greater(t, f, bounds[b-1])
					}
				} else {
					if b < len(bounds) {
						assert.Less(t, f, bounds[b])
					}
					if b > 0 {
						assert.GreaterOrEqual(t, f, bounds[b-1])
					}
				}
				assert.Equal(t, f, dp.Sum())
			})
		}
	}
}

// Exponential buckets at scale 0: index i covers (2^i, 2^(i+1)]. A sample of
// value v >= 1 lands in the index whose range holds v, or (its slot's
// inclusive lower edge, v = 2^k) the index just above; 0 lands in the
// zero count only where the convention has a slot for 0 alone.
func TestHistogramExponentialEdges(t *testing.T) {
	type result struct {
		zero  bool
		index int
	}
	expOf := func(t *testing.T, m pmetric.Metric) (result, pmetric.ExponentialHistogramDataPoint) {
		t.Helper()
		require.Equal(t, pmetric.MetricTypeExponentialHistogram, m.Type())
		dp := m.ExponentialHistogram().DataPoints().At(0)
		assert.Equal(t, int32(0), dp.Scale())
		assert.Equal(t, int32(0), dp.Positive().Offset())
		assert.Equal(t, 0, dp.Negative().BucketCounts().Len())
		assert.Equal(t, uint64(1), dp.Count())
		if dp.ZeroCount() == 1 {
			assert.Equal(t, uint64(0), sumCounts(dp.Positive().BucketCounts().AsRaw()))
			return result{zero: true}, dp
		}
		found := -1
		for i, c := range dp.Positive().BucketCounts().AsRaw() {
			if c != 0 {
				require.Equal(t, -1, found)
				found = i
			}
		}
		require.NotEqual(t, -1, found)
		return result{index: found}, dp
	}
	inRange := func(t *testing.T, v uint64, i int) {
		t.Helper()
		lo, hi := math.Ldexp(1, i), math.Ldexp(1, i+1)
		f := float64(v)
		assert.LessOrEqual(t, f, hi, "v <= 2^(i+1)")
		assert.GreaterOrEqual(t, f, lo, "v >= 2^i (equal only at a slot's inclusive lower edge)")
	}

	t.Run("log2 bcc", func(t *testing.T) {
		desc := testDescribe()
		desc.Programs[3].Maps[0].Histogram.Slots = edgeSlots
		keys := []*sidecarpb.Column{{Field: "comm", Strings: []string{"x"}}}
		cfg := MetricConfig{Name: "h", MapName: "runq_latency", Type: MetricTypeHistogram, HistogramFormat: HistogramFormatExponential}
		// Slot 0 holds only the value 0 (BCC itself never fills it): the zero count.
		r, dp := expOf(t, oneSample(t, desc, cfg, "runqlat", keys, 0, 0))
		assert.True(t, r.zero)
		assert.Equal(t, edgeSlots-1, dp.Positive().BucketCounts().Len(), "slots 1..n-1")
		for _, v := range []uint64{0, 1, 2, 3, 4, 5, 7, 8, 1023, 1024, 1025} {
			slot := log2BCCSlot(v)
			r, dp := expOf(t, oneSample(t, desc, cfg, "runqlat", keys, slot, v))
			require.False(t, r.zero, "v=%d", v)
			assert.Equal(t, int(slot)-1, r.index, "v=%d: slot s -> index s-1", v)
			assert.Equal(t, float64(v), dp.Sum())
			if v >= 2 {
				inRange(t, v, r.index)
			}
		}
		// 0 and 1 share slot 1 -> index 0, (1, 2].
		// Above the last slot: clamped into index n-2.
		r, _ = expOf(t, oneSample(t, desc, cfg, "runqlat", keys, log2BCCSlot(1<<20), 1<<20))
		assert.Equal(t, edgeSlots-2, r.index)
	})

	t.Run("log2 exponent", func(t *testing.T) {
		cfg := MetricConfig{Name: "h", MapName: "exp_latency", Type: MetricTypeHistogram, HistogramFormat: HistogramFormatExponential}
		for _, v := range []uint64{0, 1, 2, 3, 4, 7, 8, 127, 128} {
			slot := uint64(max(bits.Len64(v)-1, 0))
			r, dp := expOf(t, oneSample(t, testDescribe(), cfg, "misc", nil, slot, v))
			require.False(t, r.zero, "no zero count: 0 shares slot 0 with 1")
			assert.Equal(t, int(slot), r.index, "v=%d: slot s -> index s", v)
			assert.Equal(t, 8, dp.Positive().BucketCounts().Len())
			if v >= 1 {
				// slot 0 = [1, 2) -> (1, 2]; v = 1 is the inclusive lower edge.
				inRange(t, max(v, 1), r.index)
			}
		}
		r, _ := expOf(t, oneSample(t, testDescribe(), cfg, "misc", nil, 40, 1<<40))
		assert.Equal(t, 7, r.index, "clamped into the last slot")
	})
}

func sumCounts(c []uint64) uint64 {
	var s uint64
	for _, x := range c {
		s += x
	}
	return s
}

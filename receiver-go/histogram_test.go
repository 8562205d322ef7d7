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

// log2BCCSlot is SLOT_CONVENTION_LOG2_BCC as the proto defines it: slot 0
// holds 0, slot s >= 1 holds [2^(s-1), 2^s). Before clamping into the last
// slot, that is the bit length of the value.
func log2BCCSlot(v uint64) uint64 { return uint64(bits.Len64(v)) }

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
	res, err := resolve(cfg, desc)
	require.NoError(t, err)
	conv := newConverter(res.bindings, "test", zap.NewNop())
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
	edges := []edge{{0, 0}, {1, 1}, {2, 2}, {3, 2}, {4, 3}, {5, 3}, {7, 3}, {8, 4}}
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
			if b > 0 && b < len(bounds) {
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
	assert.Equal(t, []float64{1, 2, 4, 8, 16}, log2Bounds(6, 1))
	assert.Nil(t, log2Bounds(1, 1))
	assert.Nil(t, log2Bounds(0, 1))

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

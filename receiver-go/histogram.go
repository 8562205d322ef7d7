package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// A histogram map counts samples in slots; the layout's convention says
// which values a slot holds. The last of n slots also holds everything
// above it (the BPF side clamps into it).
//
//	LOG2_BCC       BCC's bpf_log2l(v) = floor(log2 v) + 1, bpf_log2l(0) = 1:
//	               slot 1 holds 0 and 1, slot s >= 2 holds [2^(s-1), 2^s),
//	               slot 0 stays empty (a program that puts 0 there may).
//	               Upper bound of slot s: 2^s.
//	LOG2_EXPONENT  slot s holds [2^s, 2^(s+1)); 0 lands in slot 0 with 1.
//	               Upper bound of slot s: 2^(s+1).
//	LINEAR         slot s holds [s*w, (s+1)*w). Upper bound: (s+1)*w.
//	FIXED          slot s holds values up to bounds[s] inclusive.
//	EXPONENTIAL    OpenTelemetry's buckets at the layout's scale, from its
//	               index_offset o on: slot 0 holds [0, 2^(o/2^scale)] (the
//	               zero bucket), slot s >= 1 bucket index o+s-1, i.e.
//	               (2^((o+s-1)/2^scale), 2^((o+s)/2^scale)]. Upper bound of
//	               slot s: 2^((o+s)/2^scale). Exact at every edge (the BPF
//	               side computes the index with integers).
//
// Explicit buckets (the default): one bucket per slot, bucket i <-> slot i,
// explicit bounds = the upper bounds of slots 0..n-2 times scale (scale
// converts slot units into the metric unit, ns -> s: 1e-9), so the last
// bucket, (bound[n-2], +Inf), receives the clamped last slot. For the log2
// and linear conventions a slot's lower edge is inclusive where
// OpenTelemetry's is exclusive: a sample of exactly a slot's lower edge sits
// in the bucket whose nominal range starts just above it. FIXED matches
// OpenTelemetry exactly.
//
// Exponential buckets (histogram_format: exponential, log2 and exponential
// conventions only, no rescaling): each slot becomes the bucket with the
// same upper bound, so the nominal ranges are those of the explicit buckets.
//
//	LOG2_BCC       scale 0; slot 0 -> zero count (it can hold only the
//	               value 0), slot s >= 1 -> bucket index s-1, (2^(s-1), 2^s].
//	LOG2_EXPONENT  scale 0; slot s -> bucket index s, (2^s, 2^(s+1)]; no
//	               zero count (0 shares slot 0 with 1).
//	EXPONENTIAL    the layout's scale; slot 0 -> zero count with zero
//	               threshold 2^(o/2^scale), slot s >= 1 -> index o+s-1.
//
// The positive buckets then start at index 0 (offset 0), or o. The clamped last
// slot is reported in its own bucket: exponential histograms have no +Inf
// bucket. histogram_test.go pins all of this down at the edges.

// log2Bounds returns 2^(s+shift) for s = 0..slots-2: the upper bounds of
// the log2 slots but the last (shift 0 for LOG2_BCC, 1 for LOG2_EXPONENT).
func log2Bounds(slots uint32, shift int) []float64 {
	if slots < 2 {
		return nil
	}
	b := make([]float64, slots-1)
	for s := range b {
		b[s] = math.Ldexp(1, s+shift)
	}
	return b
}

// maxExponentialScale is OpenTelemetry's largest scale.
const maxExponentialScale = 20

// exponentialBound is 2^(index/2^scale), the upper edge of bucket index-1
// of a base-2 exponential histogram at scale.
func exponentialBound(scale, index int32) float64 {
	return math.Exp2(float64(index) / float64(int64(1)<<scale))
}

// exponentialBounds returns the upper bounds of EXPONENTIAL slots 0..n-2:
// slot 0 (the zero bucket) ends at 2^(offset/2^scale), slot s >= 1 (index
// offset+s-1) at 2^((offset+s)/2^scale).
func exponentialBounds(slots uint32, scale, offset int32) []float64 {
	b := make([]float64, slots-1)
	for s := range b {
		b[s] = exponentialBound(scale, offset+int32(s)) //nolint:gosec // s < maxHistogramSlots
	}
	return b
}

// linearBounds returns (s+1)*width for s = 0..slots-2.
func linearBounds(slots uint32, width float64) []float64 {
	if slots < 2 {
		return nil
	}
	b := make([]float64, slots-1)
	for s := range b {
		b[s] = float64(s+1) * width
	}
	return b
}

// clampSlot maps a raw slot index onto 0..slots-1: the last slot holds
// everything above it; a negative slot (a broken signed column) counts as 0.
func clampSlot(raw int64, slots uint32) int {
	switch {
	case raw < 0:
		return 0
	case raw >= int64(slots):
		return int(slots) - 1
	default:
		return int(raw)
	}
}

// histAcc accumulates the slots of one histogram (one attribute set).
type histAcc struct {
	counts []uint64
	sum    float64 // in slot units
}

func newHistAcc(slots uint32) *histAcc {
	return &histAcc{counts: make([]uint64, slots)}
}

func (h *histAcc) add(slot int, count uint64, sum float64) {
	h.counts[slot] += count
	h.sum += sum
}

func (h *histAcc) total() uint64 {
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	return total
}

// fill writes the accumulated histogram into dp as explicit buckets.
func (h *histAcc) fill(dp pmetric.HistogramDataPoint, b *metricBinding, start, ts pcommon.Timestamp) {
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	dp.SetCount(h.total())
	if b.hasSum {
		dp.SetSum(h.sum * b.scale)
	}
	dp.BucketCounts().FromRaw(h.counts)
	bounds := make([]float64, len(b.bounds))
	for i, v := range b.bounds {
		bounds[i] = v * b.scale
	}
	dp.ExplicitBounds().FromRaw(bounds)
}

// fillExponential writes the accumulated histogram into dp as a base-2
// exponential histogram at the layout's scale (0 for the log2 conventions;
// b.scale is 1: the unit is the slot unit).
func (h *histAcc) fillExponential(dp pmetric.ExponentialHistogramDataPoint, b *metricBinding, start, ts pcommon.Timestamp) {
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	dp.SetScale(b.expScale)
	dp.SetCount(h.total())
	if b.hasSum {
		dp.SetSum(h.sum)
	}
	counts := h.counts
	if b.zeroSlot && len(counts) > 0 {
		dp.SetZeroCount(counts[0])
		dp.SetZeroThreshold(b.zeroThreshold)
		counts = counts[1:]
	}
	dp.Positive().SetOffset(b.indexOffset)
	dp.Positive().BucketCounts().FromRaw(counts)
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Log2 histograms, SLOT_CONVENTION_LOG2_BCC (BCC's bpf_log2l()):
//
//	slot 0       holds the value 0
//	slot s >= 1  holds values in [2^(s-1), 2^s) slot units
//	slot n-1     (the last of n slots) also holds everything above: the BPF
//	             side clamps into it
//
// They become OpenTelemetry explicit-bucket histograms with one bucket per
// slot: bucket i <-> slot i, explicit bounds 2^s * scale for s = 0..n-2, so
// bucket 0 is (-Inf, 1], bucket s is (2^(s-1), 2^s] and the last bucket,
// (2^(n-2), +Inf), receives the clamped last slot. scale converts slot units
// into the metric unit (ns -> s: 1e-9).
//
// The slot's lower edge is inclusive in BPF and exclusive in OpenTelemetry:
// a sample of exactly 2^(s-1) units sits in bucket s although its nominal
// range starts just above that value. Every other sample lies inside its
// bucket's nominal range. BCC's bpf_log2l() also returns 1 for 0, so
// with BCC programs samples of 0 land in slot 1 and slot 0 stays empty.
// histogram_test.go pins this down at the edges.

// log2Bounds returns the explicit bounds for a log2 histogram of slots slots
// whose slot unit is scaled by scale: 2^s * scale for s = 0..slots-2.
func log2Bounds(slots uint32, scale float64) []float64 {
	if slots < 2 {
		return nil
	}
	b := make([]float64, slots-1)
	for s := range b {
		b[s] = math.Ldexp(1, s) * scale
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

// fill writes the accumulated histogram into dp.
func (h *histAcc) fill(dp pmetric.HistogramDataPoint, b *metricBinding, start, ts pcommon.Timestamp) {
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	dp.SetCount(total)
	if b.hasSum {
		dp.SetSum(h.sum * b.scale)
	}
	dp.BucketCounts().FromRaw(h.counts)
	dp.ExplicitBounds().FromRaw(log2Bounds(b.slots, b.scale))
}

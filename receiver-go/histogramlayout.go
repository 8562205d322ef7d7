package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"
	"math"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// layoutBuckets sets the explicit bounds (in slot units) of histogram
// layout h, and checks that the requested histogram format fits its
// convention. See histogram.go for every convention's buckets.
func (b *metricBinding) layoutBuckets(path, where string, h *sidecarpb.HistogramLayout) error {
	n := h.GetSlots()
	switch c := h.GetConvention(); c {
	case sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC:
		b.bounds = log2Bounds(n, 0)
		b.zeroSlot = true
	case sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT:
		b.bounds = log2Bounds(n, 1)
	case sidecarpb.SlotConvention_SLOT_CONVENTION_LINEAR:
		w := h.GetLinearWidth()
		if !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("%s.map_name: histogram map %s uses linear slots of width %v; the width must be a positive number, so the sidecar's manifest is broken", path, where, w)
		}
		b.bounds = linearBounds(n, w)
	case sidecarpb.SlotConvention_SLOT_CONVENTION_EXPONENTIAL:
		scale, offset := h.GetScale(), h.GetIndexOffset()
		if scale < 1 || scale > maxExponentialScale || n < 2 {
			return fmt.Errorf("%s.map_name: histogram map %s uses exponential slots at scale %d with %d slots; OpenTelemetry's scales for finer-than-log2 buckets are 1 to %d, and a zero slot and one bucket need 2 slots, so the sidecar's manifest is broken", path, where, scale, n, maxExponentialScale)
		}
		b.bounds = exponentialBounds(n, scale, offset)
		b.zeroSlot = true
		b.expScale = scale
		b.indexOffset = offset
		b.zeroThreshold = exponentialBound(scale, offset)
	case sidecarpb.SlotConvention_SLOT_CONVENTION_FIXED:
		bounds := h.GetBounds()
		if len(bounds)+1 != int(n) {
			return fmt.Errorf("%s.map_name: histogram map %s has %d slots but %d fixed bounds (it needs slots-1 = %d); the sidecar's manifest is broken", path, where, n, len(bounds), n-1)
		}
		for i := 1; i < len(bounds); i++ {
			if !(bounds[i] > bounds[i-1]) {
				return fmt.Errorf("%s.map_name: histogram map %s has fixed bounds %v that do not increase at index %d; the sidecar's manifest is broken", path, where, bounds, i)
			}
		}
		b.bounds = append([]float64(nil), bounds...)
	default:
		return fmt.Errorf("%s.map_name: histogram map %s uses slot convention %s, which this receiver does not support (supported: %s, %s, %s, %s, %s)", path, where, c,
			sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC, sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT,
			sidecarpb.SlotConvention_SLOT_CONVENTION_LINEAR, sidecarpb.SlotConvention_SLOT_CONVENTION_FIXED,
			sidecarpb.SlotConvention_SLOT_CONVENTION_EXPONENTIAL)
	}
	if b.exponential && !isExponential(h.GetConvention()) {
		return fmt.Errorf("%s.histogram_format: exponential needs power-of-two or exponential slots, but histogram map %s uses slot convention %s; use histogram_format explicit", path, where, h.GetConvention())
	}
	return nil
}

// isExponential says whether slots of convention c are buckets of a base-2
// exponential histogram (scale 0 for the log2 conventions).
func isExponential(c sidecarpb.SlotConvention) bool {
	switch c {
	case sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC, sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT,
		sidecarpb.SlotConvention_SLOT_CONVENTION_EXPONENTIAL:
		return true
	}
	return false
}

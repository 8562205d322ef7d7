package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"
	"math"
)

// durationUnits are the UCUM time units the receiver converts between, in
// seconds.
var durationUnits = map[string]float64{
	"ns":  1e-9,
	"us":  1e-6,
	"ms":  1e-3,
	"s":   1,
	"min": 60,
	"h":   3600,
}

// defaultMetricUnit is the metric unit for a raw unit when the config names
// none: durations are reported in seconds (OpenTelemetry semantic
// conventions), everything else as is.
func defaultMetricUnit(raw string) string {
	if _, ok := durationUnits[raw]; ok {
		return "s"
	}
	return raw
}

// unitScale is the factor that converts a raw value in unit from into unit
// to. Identical units, and units the receiver does not know how to relate
// (counts, annotations like "{syscall}", bytes), scale by 1: the unit is
// then a label only. Durations convert among ns, us, ms, s, min and h; a
// duration cannot become a non-duration or the other way round.
func unitScale(from, to string) (float64, error) {
	if from == to {
		return 1, nil
	}
	fs, fromDur := durationUnits[from]
	ts, toDur := durationUnits[to]
	switch {
	case fromDur && toDur:
		return fs / ts, nil
	case fromDur:
		return 1, fmt.Errorf("%q cannot express a duration measured in %q; use s (recommended), ms, us or ns, or leave unit empty for s", to, from)
	case toDur && from != "":
		return 1, fmt.Errorf("%q is a duration unit but the field is measured in %q; leave unit empty for %q or use a unit of the same kind", to, from, from)
	default:
		return 1, nil
	}
}

// bindUnit sets b's unit and scale from the raw unit of what it reads (a
// value field's, or a histogram layout's) and m's unit and scale: the one
// place raw units become metric units. Exponential histograms cannot be
// rescaled, so they default to the slot unit.
func (b *metricBinding) bindUnit(path string, m *MetricConfig, rawUnit string) []error {
	var errs []error
	b.unit = m.Unit
	if b.unit == "" {
		b.unit = defaultMetricUnit(rawUnit)
		if b.exponential {
			b.unit = rawUnit
		}
	}
	scale, err := unitScale(rawUnit, b.unit)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.unit: %w", path, err))
	}
	b.scale = scale
	switch {
	case m.Scale < 0 || math.IsNaN(m.Scale) || math.IsInf(m.Scale, 0):
		errs = append(errs, fmt.Errorf("%s.scale: %v is not a positive factor; set a number above 0, e.g. 4096 for pages into bytes", path, m.Scale))
	case m.Scale > 0 && b.exponential && m.Scale != 1:
		errs = append(errs, fmt.Errorf("%s.scale: exponential buckets are powers of two of the slot unit and cannot be rescaled; remove scale or use histogram_format explicit", path))
	case m.Scale > 0:
		b.scale *= m.Scale
	}
	if b.exponential && err == nil && b.unit != rawUnit {
		errs = append(errs, fmt.Errorf("%s.histogram_format: exponential buckets are powers of two of the slot unit %q and cannot be rescaled, but the metric unit is %q; set unit to %q, or use histogram_format explicit", path, rawUnit, b.unit, rawUnit))
	}
	return errs
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// maxHistogramSlots bounds the buckets of one histogram: the receiver keeps
// that many counters per series, so a catalog declaring 2^32 slots would
// allocate without limit. 64-bit log2 needs 65 slots; finer log-linear
// layouts of a 64-bit range (scale 3: 8 buckets per power of two) 520.
const maxHistogramSlots = 4096

// fieldRef is one column the converter reads: its name and wire type.
type fieldRef struct {
	name string
	typ  sidecarpb.FieldType
}

// metricBinding is one metric resolved against the catalog: everything the
// converter needs, with no further catalog lookups.
type metricBinding struct {
	name        string
	description string
	unit        string
	typ         MetricType
	program     string
	mapName     string
	attributes  []attributeBinding

	// Sums and gauges: one value field, or several each marked by the
	// value attribute.
	values         []valueRef
	valueAttribute string

	// Histograms.
	slot   fieldRef
	slots  uint32
	count  fieldRef
	sum    fieldRef // empty name: the map keeps no sum
	hasSum bool

	// Histograms: the upper bounds of slots 0..n-2 in slot units (explicit
	// buckets); whether to emit an exponential histogram instead, and for
	// it whether slot 0 is the zero count (LOG2_BCC) or bucket 0 (see
	// histogram.go).
	bounds      []float64
	exponential bool
	zeroSlot    bool
	// For exponential output: the scale, the bucket index of the slot after
	// the zero slot (or of slot 0 without one), and the zero threshold (the
	// upper edge of the zero slot; 0 for LOG2_BCC, whose slot 0 holds only 0).
	expScale      int32
	indexOffset   int32
	zeroThreshold float64

	// scale converts the raw value (or slot bound and sum) into the metric
	// unit; 1 keeps integers as integers.
	scale float64

	// limit is the cardinality limit: the number of series before new ones
	// fold into the overflow series.
	limit int
	// delta: the map is cleared on read and points cover one interval.
	delta bool
	// perCPU: the map is read per CPU (extra key column "cpu").
	perCPU bool
	// path is the config path of the metric, for errors between metrics.
	path string
}

// valueRef is one value field of a sum or gauge; attrValue is the value of
// the binding's valueAttribute on its points (unused without one).
type valueRef struct {
	field     fieldRef
	attrValue string
}

func bindMetric(cat *catalog, path string, m *MetricConfig, defaultLimit int) (*metricBinding, error) {
	program, mp, err := locateMap(cat, path, m)
	if err != nil {
		return nil, err
	}
	where := program + "/" + mp.GetName()
	b := &metricBinding{
		name:        m.Name,
		description: m.Description,
		typ:         m.Type,
		program:     program,
		mapName:     mp.GetName(),
		scale:       1,
		limit:       defaultLimit,
		delta:       m.Temporality == TemporalityDelta,
		perCPU:      m.PerCPU,
		exponential: m.HistogramFormat == HistogramFormatExponential,
		path:        path,
	}
	if m.CardinalityLimit != nil {
		b.limit = *m.CardinalityLimit
	}
	if b.description == "" {
		b.description = mp.GetDescription()
	}
	isHist := mp.GetKind() == sidecarpb.MapKind_MAP_KIND_HISTOGRAM
	var errs []error
	var slotField string
	var rawUnit string

	switch {
	case m.Type == MetricTypeHistogram && !isHist:
		return nil, fmt.Errorf("%s.type: histogram needs a histogram map, but %s is a %s map; set type to sum or gauge", path, where, kindName(mp.GetKind()))
	case m.Type != MetricTypeHistogram && isHist:
		return nil, fmt.Errorf("%s.type: %s is a histogram map, so %q is not possible; set type to histogram", path, where, string(m.Type))
	case m.Type == MetricTypeHistogram:
		if m.ValueField != "" {
			errs = append(errs, fmt.Errorf("%s.value_field: does not apply to histograms (they read the map's count and sum fields, %s); remove it", path, fieldNames(mp.GetValueFields(), "")))
		}
		h := mp.GetHistogram()
		if h == nil {
			return nil, fmt.Errorf("%s.map_name: histogram map %s has no histogram layout in the sidecar's catalog; the sidecar's manifest is incomplete", path, where)
		}
		if h.GetSlots() < 1 || h.GetSlots() > maxHistogramSlots {
			errs = append(errs, fmt.Errorf("%s.map_name: histogram map %s declares %d slots, and a histogram has 1 to %d; the sidecar's manifest is broken", path, where, h.GetSlots(), maxHistogramSlots))
		} else if err := b.layoutBuckets(path, where, h); err != nil {
			errs = append(errs, err)
		}
		slotField = h.GetSlotField()
		sf := findField(mp.GetKeyFields(), slotField)
		cf := findField(mp.GetValueFields(), h.GetCountField())
		if sf == nil || cf == nil {
			errs = append(errs, fmt.Errorf("%s.map_name: histogram map %s names slot field %q and count field %q, which are not among its key fields (%s) and value fields (%s); the sidecar's manifest is broken",
				path, where, slotField, h.GetCountField(), fieldNames(mp.GetKeyFields(), ""), fieldNames(mp.GetValueFields(), "")))
		} else {
			b.slot = fieldRef{sf.GetName(), sf.GetType()}
			b.count = fieldRef{cf.GetName(), cf.GetType()}
		}
		if h.GetSumField() != "" {
			if sm := findField(mp.GetValueFields(), h.GetSumField()); sm != nil {
				b.sum = fieldRef{sm.GetName(), sm.GetType()}
				b.hasSum = true
			} else {
				errs = append(errs, fmt.Errorf("%s.map_name: histogram map %s names sum field %q, which is not among its value fields (%s); the sidecar's manifest is broken", path, where, h.GetSumField(), fieldNames(mp.GetValueFields(), "")))
			}
		}
		b.slots = h.GetSlots()
		rawUnit = h.GetUnit()
	case m.ValueAttribute != nil:
		b.valueAttribute = m.ValueAttribute.Name
		for j, v := range m.ValueAttribute.Fields {
			f, err := numericValueField(mp, where, fmt.Sprintf("%s.value_attribute.fields[%d].field", path, j), v.Field)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if j == 0 {
				rawUnit = f.GetUnit()
			} else if f.GetUnit() != rawUnit {
				errs = append(errs, fmt.Errorf("%s.value_attribute.fields[%d].field: %q is in %q but the first field is in %q; one metric has one unit", path, j, v.Field, f.GetUnit(), rawUnit))
			}
			b.values = append(b.values, valueRef{field: fieldRef{f.GetName(), f.GetType()}, attrValue: v.Value})
		}
	default:
		vf := m.ValueField
		if vf == "" {
			if len(mp.GetValueFields()) != 1 {
				return nil, fmt.Errorf("%s.value_field: map %s has %d value fields; set value_field to one of: %s", path, where, len(mp.GetValueFields()), fieldNames(mp.GetValueFields(), ""))
			}
			vf = mp.GetValueFields()[0].GetName()
		}
		f, err := numericValueField(mp, where, path+".value_field", vf)
		if err != nil {
			return nil, err
		}
		b.values = []valueRef{{field: fieldRef{f.GetName(), f.GetType()}}}
		rawUnit = f.GetUnit()
	}

	errs = append(errs, b.bindUnit(path, m, rawUnit)...)

	keyFields, err := perCPUKeyFields(path, where, m, mp)
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, knobsFitType(path, m.Type, m.Temporality, m.HistogramFormat)...)
	errs = append(errs, b.bindAttributes(path, where, m, mp, keyFields, slotField, isHist)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

// numericValueField finds value field name of mp and checks it is a number.
func numericValueField(mp *sidecarpb.Map, where, path, name string) (*sidecarpb.Field, error) {
	f := findField(mp.GetValueFields(), name)
	if f == nil {
		return nil, fmt.Errorf("%s: map %s has no value field %q; valid value fields: %s", path, where, name, fieldNames(mp.GetValueFields(), ""))
	}
	if f.GetType() != sidecarpb.FieldType_FIELD_TYPE_UINT && f.GetType() != sidecarpb.FieldType_FIELD_TYPE_INT {
		return nil, fmt.Errorf("%s: field %q of %s is %s, not a number; choose a numeric value field", path, name, where, f.GetType())
	}
	return f, nil
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// attributeBinding maps one key column to one attribute.
type attributeBinding struct {
	field    fieldRef
	name     string
	resource bool
}

// cpuColumn is the extra key column of a per-CPU read, and cpuAttribute
// the attribute it becomes by default.
const (
	cpuColumn    = "cpu"
	cpuAttribute = "cpu.logical_number"
)

// perCPUKeyFields is the key fields of mp as a read for m sees them: a
// per-CPU read adds key column "cpu", which a map with a key field of that
// name cannot take (its key fields are returned with the error).
func perCPUKeyFields(path, where string, m *MetricConfig, mp *sidecarpb.Map) ([]*sidecarpb.Field, error) {
	keyFields := mp.GetKeyFields()
	if m.PerCPU {
		if findField(keyFields, cpuColumn) != nil {
			return keyFields, fmt.Errorf("%s.per_cpu: map %s already has a key field %q, which the per-CPU column of that name would shadow; remove per_cpu (the map is keyed by CPU already)", path, where, cpuColumn)
		}
		keyFields = append(keyFields[:len(keyFields):len(keyFields)], &sidecarpb.Field{Name: cpuColumn, Type: sidecarpb.FieldType_FIELD_TYPE_UINT, Attribute: cpuAttribute})
	}
	return keyFields, nil
}

// bindAttributes binds the key columns (keyFields, with a per-CPU read's
// "cpu") that become b's attributes: those m lists, or by default every
// key field but a histogram's slot field, named as the catalog names them.
// A per-CPU read adds the CPU unless m's attributes name it themselves.
func (b *metricBinding) bindAttributes(path, where string, m *MetricConfig, mp *sidecarpb.Map, keyFields []*sidecarpb.Field, slotField string, isHist bool) []error {
	var errs []error
	if len(m.Attributes) == 0 {
		for _, f := range keyFields {
			if f.GetName() == slotField && isHist {
				continue
			}
			name := f.GetAttribute()
			if name == "" {
				name = f.GetName()
			}
			b.attributes = append(b.attributes, attributeBinding{field: fieldRef{f.GetName(), f.GetType()}, name: name})
		}
	} else {
		cpuNamed := false
		for j, a := range m.Attributes {
			apath := fmt.Sprintf("%s.attributes[%d].field", path, j)
			if isHist && a.Field == slotField {
				errs = append(errs, fmt.Errorf("%s: %q is the histogram slot field of %s and becomes the buckets, not an attribute; valid key fields: %s", apath, a.Field, where, fieldNames(keyFields, slotField)))
				continue
			}
			f := findField(keyFields, a.Field)
			if f == nil {
				hint := ""
				switch {
				case findField(mp.GetValueFields(), a.Field) != nil:
					hint = " (it is a value field)"
				case a.Field == cpuColumn:
					hint = " (it is a key column only with per_cpu: true)"
				}
				errs = append(errs, fmt.Errorf("%s: %q is not a key field of %s%s; valid key fields: %s", apath, a.Field, where, hint, fieldNames(keyFields, slotField)))
				continue
			}
			cpuNamed = cpuNamed || (m.PerCPU && a.Field == cpuColumn)
			b.attributes = append(b.attributes, attributeBinding{field: fieldRef{f.GetName(), f.GetType()}, name: a.Name, resource: a.Resource})
		}
		// per_cpu adds the CPU to the data points unless the attributes
		// name the cpu column themselves.
		if m.PerCPU && !cpuNamed && findField(mp.GetKeyFields(), cpuColumn) == nil {
			for j, a := range m.Attributes {
				if a.Name == cpuAttribute {
					errs = append(errs, fmt.Errorf("%s.attributes[%d].name: %q is the attribute per_cpu adds; rename it, or list {field: cpu, name: ...} to name the CPU attribute yourself", path, j, cpuAttribute))
				}
			}
			b.attributes = append(b.attributes, attributeBinding{field: fieldRef{cpuColumn, sidecarpb.FieldType_FIELD_TYPE_UINT}, name: cpuAttribute})
		}
	}
	return errs
}

// attr is one attribute value: a string, an int, or (the overflow
// marker) a bool.
type attr struct {
	name   string
	str    string
	num    int64
	isStr  bool
	isBool bool
}

func attrAt(col *column, a attributeBinding, i int) attr {
	if a.field.typ == sidecarpb.FieldType_FIELD_TYPE_STRING {
		return attr{name: a.name, str: col.GetStrings()[i], isStr: true}
	}
	return attr{name: a.name, num: intAt(col, a.field, i)}
}

func putAttrs(m pcommon.Map, attrs []attr) {
	m.EnsureCapacity(len(attrs))
	for _, a := range attrs {
		switch {
		case a.isStr:
			m.PutStr(a.name, a.str)
		case a.isBool:
			m.PutBool(a.name, a.num != 0)
		default:
			m.PutInt(a.name, a.num)
		}
	}
}

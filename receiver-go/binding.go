package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// fieldRef is one column the converter reads: its name and wire type.
type fieldRef struct {
	name string
	typ  sidecarpb.FieldType
}

// attributeBinding maps one key column to one attribute.
type attributeBinding struct {
	field    fieldRef
	name     string
	resource bool
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

// cpuColumn is the extra key column of a per-CPU read, and cpuAttribute
// the attribute it becomes by default.
const (
	cpuColumn    = "cpu"
	cpuAttribute = "cpu.logical_number"
)

// valueRef is one value field of a sum or gauge; attrValue is the value of
// the binding's valueAttribute on its points (unused without one).
type valueRef struct {
	field     fieldRef
	attrValue string
}

// resolution is a config resolved against a DescribeResponse.
type resolution struct {
	request  *sidecarpb.StreamRequest
	bindings []*metricBinding
}

// catalog indexes a DescribeResponse.
type catalog struct {
	programs map[string]*sidecarpb.Program
	order    []string // program names as the sidecar lists them
}

func newCatalog(desc *sidecarpb.DescribeResponse) *catalog {
	c := &catalog{programs: map[string]*sidecarpb.Program{}}
	for _, p := range desc.GetPrograms() {
		if _, dup := c.programs[p.GetName()]; dup {
			continue
		}
		c.programs[p.GetName()] = p
		c.order = append(c.order, p.GetName())
	}
	return c
}

func (c *catalog) programNames() string {
	if len(c.order) == 0 {
		return "(none: the sidecar's catalog is empty)"
	}
	return strings.Join(c.order, ", ")
}

// mapNames lists every map as program/map.
func (c *catalog) mapNames() string {
	var names []string
	for _, pn := range c.order {
		for _, m := range c.programs[pn].GetMaps() {
			names = append(names, pn+"/"+m.GetName())
		}
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func findMap(p *sidecarpb.Program, name string) *sidecarpb.Map {
	for _, m := range p.GetMaps() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

func findField(fields []*sidecarpb.Field, name string) *sidecarpb.Field {
	for _, f := range fields {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

func fieldNames(fields []*sidecarpb.Field, skip string) string {
	var names []string
	for _, f := range fields {
		if f.GetName() != skip {
			names = append(names, f.GetName())
		}
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

// resolve binds cfg to the sidecar's catalog. Every error names the config
// field, the bad value and the valid choices.
func resolve(cfg *Config, desc *sidecarpb.DescribeResponse) (*resolution, error) {
	cat := newCatalog(desc)
	var errs []error

	// Requested programs, in config order.
	type progReq struct {
		name   string
		params map[string]string
	}
	var programs []progReq
	requested := map[string]bool{}
	for i, p := range cfg.Programs {
		if _, ok := cat.programs[p.Name]; !ok {
			errs = append(errs, fmt.Errorf("programs[%d].name: unknown program %q; valid programs: %s", i, p.Name, cat.programNames()))
			continue
		}
		if requested[p.Name] {
			continue
		}
		errs = append(errs, checkParameters(cat.programs[p.Name], i, p.Parameters)...)
		requested[p.Name] = true
		programs = append(programs, progReq{name: p.Name, params: p.Parameters})
	}

	// The metrics to bind: the config's, or the default metrics of every
	// requested program.
	type metricSpec struct {
		path string // config path for errors
		cfg  MetricConfig
	}
	params := map[string]map[string]string{}
	programIndex := map[string]int{}
	for i, p := range cfg.Programs {
		if _, seen := programIndex[p.Name]; !seen {
			programIndex[p.Name] = i
			params[p.Name] = p.Parameters
		}
	}
	var specs []metricSpec
	if len(cfg.Metrics) > 0 {
		for i, m := range cfg.Metrics {
			specs = append(specs, metricSpec{path: fmt.Sprintf("metrics[%d]", i), cfg: m})
		}
	} else {
		for _, pr := range programs {
			p := cat.programs[pr.name]
			if len(p.GetDefaultMetrics()) == 0 {
				errs = append(errs, fmt.Errorf("programs: program %q has no default metrics in the sidecar's catalog; list the metrics to emit under metrics", pr.name))
			}
			pi := programIndex[pr.name]
			overrides := cfg.Programs[pi].Metrics
			var defaultNames []string
			for _, mb := range p.GetDefaultMetrics() {
				defaultNames = append(defaultNames, mb.GetName())
			}
			for _, name := range sortedKeys(overrides) {
				found := false
				for _, dn := range defaultNames {
					found = found || dn == name
				}
				if !found {
					valid := strings.Join(defaultNames, ", ")
					if valid == "" {
						valid = "(none)"
					}
					errs = append(errs, fmt.Errorf("programs[%d].metrics[%s]: program %q has no default metric %q; its default metrics: %s", pi, name, pr.name, name, valid))
				}
			}
			kept := 0
			for j, mb := range p.GetDefaultMetrics() {
				// A default metric on a map its parameters compile out is
				// left out.
				if mp := findMap(p, mb.GetMap()); mp != nil {
					if on, _ := mapEnabled(p, mp, pr.params); !on {
						continue
					}
				}
				kept++
				spec := metricSpec{
					path: fmt.Sprintf("catalog program %q default_metrics[%d] (%s)", pr.name, j, mb.GetName()),
					cfg:  metricConfigFromBinding(pr.name, mb),
				}
				if o, ok := overrides[mb.GetName()]; ok {
					spec.path = fmt.Sprintf("programs[%d].metrics[%s]", pi, mb.GetName())
					spec.cfg.applyOverride(o)
				}
				specs = append(specs, spec)
			}
			if kept == 0 && len(p.GetDefaultMetrics()) > 0 {
				errs = append(errs, fmt.Errorf("programs[%d].parameters: with these parameters program %q compiles out every map its default metrics read; change the parameters or list the metrics to emit under metrics", programIndex[pr.name], pr.name))
			}
		}
	}

	var bindings []*metricBinding
	names := map[string]string{}
	for _, s := range specs {
		b, err := bindMetric(cat, s.path, &s.cfg, cfg.CardinalityLimit)
		if err == nil {
			err = checkEnabled(cat, s.path, b, params, programIndex)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := names[b.name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is also emitted by %s; metric names must be unique", s.path, b.name, prev))
			continue
		}
		names[b.name] = s.path
		bindings = append(bindings, b)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Programs referenced by metrics but not listed are loaded too, with
	// their default parameters. One MapRequest per map: cleared on read when
	// its metrics are delta (all or none of them), per CPU when any metric
	// wants it (the others add the CPUs up, as any key field left out).
	seenMaps := map[mapKey]*sidecarpb.MapRequest{}
	firstReader := map[mapKey]*metricBinding{}
	req := &sidecarpb.StreamRequest{Interval: durationpb.New(cfg.CollectionInterval)}
	for _, b := range bindings {
		if !requested[b.program] {
			requested[b.program] = true
			programs = append(programs, progReq{name: b.program})
		}
		k := mapKey{b.program, b.mapName}
		mr, seen := seenMaps[k]
		if !seen {
			mr = &sidecarpb.MapRequest{Program: b.program, Map: b.mapName, ClearAfterRead: b.delta}
			seenMaps[k] = mr
			firstReader[k] = b
			req.Maps = append(req.Maps, mr)
		} else if mr.ClearAfterRead != b.delta {
			d, c := b, firstReader[k]
			if !d.delta {
				d, c = c, d
			}
			errs = append(errs, fmt.Errorf("%s.temporality: map %s/%s is read by delta metric %s (%s) and by %s metric %s (%s); a delta read clears the map, so every metric on a map must be delta or none; make their temporality the same",
				b.path, b.program, b.mapName, d.name, d.path, temporalityWord(c), c.name, c.path))
		}
		mr.PerCpu = mr.PerCpu || b.perCPU
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, pr := range programs {
		var params map[string]string
		if len(pr.params) > 0 {
			params = make(map[string]string, len(pr.params))
			for k, v := range pr.params {
				params[k] = v
			}
		}
		req.Programs = append(req.Programs, &sidecarpb.ProgramRequest{Name: pr.name, Parameters: params})
	}
	return &resolution{request: req, bindings: bindings}, nil
}

func temporalityWord(b *metricBinding) string {
	if b.typ == MetricTypeGauge {
		return "gauge"
	}
	return string(TemporalityCumulative)
}

// applyOverride sets the keys o sets.
func (m *MetricConfig) applyOverride(o MetricOverrideConfig) {
	if o.Unit != "" {
		m.Unit = o.Unit
	}
	if o.CardinalityLimit != nil {
		m.CardinalityLimit = o.CardinalityLimit
	}
	if o.Temporality != "" {
		m.Temporality = o.Temporality
	}
	if o.PerCPU {
		m.PerCPU = true
	}
	if o.HistogramFormat != "" {
		m.HistogramFormat = o.HistogramFormat
	}
}

func metricConfigFromBinding(program string, mb *sidecarpb.MetricBinding) MetricConfig {
	m := MetricConfig{
		Name:        mb.GetName(),
		MapName:     mb.GetMap(),
		Program:     program,
		Unit:        mb.GetUnit(),
		Description: mb.GetDescription(),
		ValueField:  mb.GetValueField(),
	}
	if mb.GetProgram() != "" {
		m.Program = mb.GetProgram()
	}
	switch mb.GetType() {
	case sidecarpb.MetricType_METRIC_TYPE_SUM:
		m.Type = MetricTypeSum
	case sidecarpb.MetricType_METRIC_TYPE_GAUGE:
		m.Type = MetricTypeGauge
	case sidecarpb.MetricType_METRIC_TYPE_HISTOGRAM:
		m.Type = MetricTypeHistogram
	default:
		m.Type = MetricType(mb.GetType().String())
	}
	for _, a := range mb.GetAttributes() {
		m.Attributes = append(m.Attributes, AttributeConfig{Field: a.GetField(), Name: a.GetName(), Resource: a.GetResource()})
	}
	if mb.GetValueAttribute() != "" {
		va := &ValueAttributeConfig{Name: mb.GetValueAttribute()}
		for _, vf := range mb.GetValueFields() {
			va.Fields = append(va.Fields, ValueFieldConfig{Field: vf.GetField(), Value: vf.GetAttributeValue()})
		}
		m.ValueAttribute = va
	}
	return m
}

// locateMap finds the program owning m.MapName.
func locateMap(cat *catalog, path string, m *MetricConfig) (string, *sidecarpb.Map, error) {
	if m.Program != "" {
		p, ok := cat.programs[m.Program]
		if !ok {
			return "", nil, fmt.Errorf("%s.program: unknown program %q; valid programs: %s", path, m.Program, cat.programNames())
		}
		mp := findMap(p, m.MapName)
		if mp == nil {
			var valid []string
			for _, x := range p.GetMaps() {
				valid = append(valid, x.GetName())
			}
			return "", nil, fmt.Errorf("%s.map_name: program %q has no map %q; its maps: %s", path, m.Program, m.MapName, strings.Join(valid, ", "))
		}
		return m.Program, mp, nil
	}
	var owners []string
	var found *sidecarpb.Map
	for _, pn := range cat.order {
		if mp := findMap(cat.programs[pn], m.MapName); mp != nil {
			owners = append(owners, pn)
			found = mp
		}
	}
	switch len(owners) {
	case 0:
		return "", nil, fmt.Errorf("%s.map_name: no catalog program has a map %q; valid maps (program/map): %s", path, m.MapName, cat.mapNames())
	case 1:
		return owners[0], found, nil
	default:
		return "", nil, fmt.Errorf("%s.map_name: map %q exists in programs %s; set %s.program to one of them", path, m.MapName, strings.Join(owners, ", "), path)
	}
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
		if h.GetSlots() < 1 {
			errs = append(errs, fmt.Errorf("%s.map_name: histogram map %s declares %d slots; the sidecar's manifest is broken", path, where, h.GetSlots()))
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

	// Unit: the one place raw units become metric units. Exponential
	// histograms cannot be rescaled, so they default to the slot unit.
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

	// Attributes. A per-CPU read adds key column "cpu".
	keyFields := mp.GetKeyFields()
	if m.PerCPU {
		if findField(keyFields, cpuColumn) != nil {
			errs = append(errs, fmt.Errorf("%s.per_cpu: map %s already has a key field %q, which the per-CPU column of that name would shadow; remove per_cpu (the map is keyed by CPU already)", path, where, cpuColumn))
		} else {
			keyFields = append(keyFields[:len(keyFields):len(keyFields)], &sidecarpb.Field{Name: cpuColumn, Type: sidecarpb.FieldType_FIELD_TYPE_UINT, Attribute: cpuAttribute})
		}
	}
	if m.Temporality == TemporalityDelta && m.Type == MetricTypeGauge {
		errs = append(errs, fmt.Errorf("%s.temporality: delta applies to sums and histograms, not to a gauge; remove it", path))
	}
	if m.HistogramFormat != "" && m.Type != MetricTypeHistogram {
		errs = append(errs, fmt.Errorf("%s.histogram_format: applies to histograms only, and the type is %s; remove it", path, m.Type))
	}
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
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

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
		return fmt.Errorf("%s.map_name: histogram map %s uses slot convention %s, which this receiver does not support (supported: %s, %s, %s, %s)", path, where, c,
			sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC, sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT,
			sidecarpb.SlotConvention_SLOT_CONVENTION_LINEAR, sidecarpb.SlotConvention_SLOT_CONVENTION_FIXED)
	}
	if b.exponential && !isLog2(h.GetConvention()) {
		return fmt.Errorf("%s.histogram_format: exponential needs power-of-two slots, but histogram map %s uses slot convention %s; use histogram_format explicit", path, where, h.GetConvention())
	}
	return nil
}

func isLog2(c sidecarpb.SlotConvention) bool {
	return c == sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC || c == sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT
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

func kindName(k sidecarpb.MapKind) string {
	switch k {
	case sidecarpb.MapKind_MAP_KIND_COUNTERS:
		return "counters"
	case sidecarpb.MapKind_MAP_KIND_HISTOGRAM:
		return "histogram"
	default:
		return k.String()
	}
}

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

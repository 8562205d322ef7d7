package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"
	"math"
	"sort"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

type mapKey struct{ program, name string }

// converter turns snapshots into pmetric.Metrics for a fixed set of bindings.
// It is used by one goroutine at a time.
// A converter lives as long as one stream: the series admitted under the
// cardinality limits and the delta start times start over with every stream,
// and with every new attach time of a map.
type converter struct {
	bindings     []*metricBinding
	byMap        map[mapKey][]int // indexes into bindings
	scopeVersion string
	logger       *zap.Logger
	tel          *selfTelemetry
	series       []*seriesSet         // by binding index
	maps         map[mapKey]*mapState // read times, for delta start times
}

// mapState remembers when a map was last read, for delta start times.
type mapState struct {
	attach uint64
	prev   uint64 // time of the previous snapshot of the map in this stream
}

func newConverter(bindings []*metricBinding, scopeVersion string, logger *zap.Logger, tel *selfTelemetry) *converter {
	c := &converter{
		bindings:     bindings,
		byMap:        map[mapKey][]int{},
		scopeVersion: scopeVersion,
		logger:       logger,
		tel:          tel,
		series:       make([]*seriesSet, len(bindings)),
		maps:         map[mapKey]*mapState{},
	}
	for i, b := range bindings {
		k := mapKey{b.program, b.mapName}
		c.byMap[k] = append(c.byMap[k], i)
		c.series[i] = &seriesSet{keys: map[string]struct{}{}}
	}
	return c
}

// column is one decoded column of a MapSnapshot.
type column = sidecarpb.Column

// convert turns one snapshot into metrics. Maps with an error, or whose
// columns do not match their entry count, are logged and skipped; the other
// maps are converted.
func (c *converter) convert(snap *sidecarpb.Snapshot) pmetric.Metrics {
	out := newMetricsBuilder(c.series)
	ts := pcommon.Timestamp(snap.GetTimeUnixNano())
	for _, ms := range snap.GetMaps() {
		k := mapKey{ms.GetProgram(), ms.GetMap()}
		idx := c.byMap[k]
		if len(idx) == 0 {
			continue
		}
		if ms.GetError() != "" {
			c.tel.mapError(k, "read")
			c.logger.Warn("Sidecar could not read a map; skipping it in this snapshot",
				zap.String("program", k.program), zap.String("map", k.name),
				zap.Uint64("sequence", snap.GetSequence()), zap.String("error", ms.GetError()))
			continue
		}
		c.checkFull(k, ms)
		cols, err := indexColumns(ms, c.bindings, idx)
		if err != nil {
			c.tel.mapError(k, "malformed")
			c.logger.Error("Malformed map snapshot from the sidecar; skipping the map",
				zap.String("program", k.program), zap.String("map", k.name),
				zap.Uint64("sequence", snap.GetSequence()), zap.Error(err))
			continue
		}
		attach := ms.GetAttachTimeUnixNano()
		// Delta points cover the time since the previous snapshot of this
		// map in this stream; the first one since the attach time.
		st, ok := c.maps[k]
		if !ok || st.attach != attach {
			st = &mapState{attach: attach, prev: attach}
			c.maps[k] = st
		}
		deltaStart := pcommon.Timestamp(st.prev)
		st.prev = snap.GetTimeUnixNano()
		for _, i := range idx {
			b := c.bindings[i]
			if set := c.series[i]; set.attach != attach {
				*set = seriesSet{attach: attach, keys: map[string]struct{}{}}
			}
			start := pcommon.Timestamp(attach)
			if b.delta {
				start = deltaStart
			}
			out.add(i, b, ms, cols, start, ts)
			c.noteOverflow(i, b, out.folded[i])
			c.series[i].keepOnly(out.seen[i])
		}
	}
	return out.build(c.bindings, c.scopeVersion)
}

func (c *converter) checkFull(k mapKey, ms *sidecarpb.MapSnapshot) {
	if maxEntries := ms.GetMaxEntries(); maxEntries > 0 && ms.GetEntries() >= maxEntries &&
		c.tel.mapFull(k, ms.GetAttachTimeUnixNano()) {
		c.logger.Warn("BPF map is at capacity: new keys are dropped, or evict the least recently updated ones in LRU maps; raise the program's size parameter",
			zap.String("program", k.program), zap.String("map", k.name), zap.Uint32("max_entries", maxEntries))
	}
	if grew, d := c.tel.droppedUpdates(k, ms.GetAttachTimeUnixNano(), ms.GetDroppedUpdates()); grew {
		c.logger.Warn("BPF map is full: the kernel program dropped updates, so counts are low; raise the map size in the sidecar",
			zap.String("program", k.program), zap.String("map", k.name),
			zap.Uint32("max_entries", ms.GetMaxEntries()), zap.Uint64("dropped_updates", d))
	}
}

// indexColumns returns the map's columns by field name, after checking that
// every column the bindings read is present, typed as the catalog says, and
// exactly ms.entries long.
func indexColumns(ms *sidecarpb.MapSnapshot, bindings []*metricBinding, idx []int) (map[string]*column, error) {
	cols := map[string]*column{}
	for _, col := range ms.GetKeyColumns() {
		cols[col.GetField()] = col
	}
	for _, col := range ms.GetValueColumns() {
		cols[col.GetField()] = col
	}
	n := int(ms.GetEntries())
	if n == 0 {
		return cols, nil
	}
	check := func(f fieldRef) error {
		if f.name == "" {
			return nil
		}
		col, ok := cols[f.name]
		if !ok {
			return fmt.Errorf("column %q is missing", f.name)
		}
		var l int
		switch f.typ {
		case sidecarpb.FieldType_FIELD_TYPE_UINT:
			l = len(col.GetUints())
		case sidecarpb.FieldType_FIELD_TYPE_INT:
			l = len(col.GetInts())
		case sidecarpb.FieldType_FIELD_TYPE_STRING:
			l = len(col.GetStrings())
		default:
			return fmt.Errorf("column %q has unsupported type %s", f.name, f.typ)
		}
		if l != n {
			return fmt.Errorf("column %q has %d %s values but the map snapshot has %d entries", f.name, l, typeWord(f.typ), n)
		}
		return nil
	}
	for _, i := range idx {
		b := bindings[i]
		refs := []fieldRef{b.slot, b.count, b.sum}
		for _, v := range b.values {
			refs = append(refs, v.field)
		}
		for _, a := range b.attributes {
			refs = append(refs, a.field)
		}
		for _, f := range refs {
			if err := check(f); err != nil {
				return nil, err
			}
		}
	}
	return cols, nil
}

func typeWord(t sidecarpb.FieldType) string {
	switch t {
	case sidecarpb.FieldType_FIELD_TYPE_UINT:
		return "uints"
	case sidecarpb.FieldType_FIELD_TYPE_INT:
		return "ints"
	default:
		return "strings"
	}
}

// intAt reads a numeric column as int64 (uint64 values above MaxInt64 are
// clamped).
func intAt(col *column, f fieldRef, i int) int64 {
	if f.typ == sidecarpb.FieldType_FIELD_TYPE_INT {
		return col.GetInts()[i]
	}
	u := col.GetUints()[i]
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}

// floatAt reads a numeric column as float64.
func floatAt(col *column, f fieldRef, i int) float64 {
	if f.typ == sidecarpb.FieldType_FIELD_TYPE_INT {
		return float64(col.GetInts()[i])
	}
	return float64(col.GetUints()[i])
}

// metricsBuilder groups data points by resource, then metric, then point
// attributes. Entries that map to the same attributes (because the config
// leaves key fields out) are added together. Series beyond a metric's
// cardinality limit are added into its overflow series.
type metricsBuilder struct {
	resources map[string]*resourceAcc
	order     []string
	series    []*seriesSet           // admitted series, by binding index
	folded    map[int]int            // series folded into the overflow, by binding index
	seen      map[int]map[string]int // series key -> 1 admitted, 2 folded (this snapshot)
}

type resourceAcc struct {
	attrs   []attr
	metrics map[int]*metricAcc // by binding index
}

type metricAcc struct {
	start  pcommon.Timestamp
	ts     pcommon.Timestamp
	points map[string]*pointAcc
	order  []string
}

type pointAcc struct {
	attrs []attr
	i     int64
	f     float64
	hist  *histAcc
}

func newMetricsBuilder(series []*seriesSet) *metricsBuilder {
	return &metricsBuilder{
		resources: map[string]*resourceAcc{},
		series:    series,
		folded:    map[int]int{},
		seen:      map[int]map[string]int{},
	}
}

func (mb *metricsBuilder) point(bi int, b *metricBinding, res, pt []attr, start, ts pcommon.Timestamp) *pointAcc {
	rk, pk := attrKey(res), attrKey(pt)
	if mb.series != nil && !mb.admit(bi, b, rk, pk) {
		res, pt = nil, overflowAttrs
		rk, pk = attrKey(res), attrKey(pt)
	}
	r, ok := mb.resources[rk]
	if !ok {
		r = &resourceAcc{attrs: res, metrics: map[int]*metricAcc{}}
		mb.resources[rk] = r
		mb.order = append(mb.order, rk)
	}
	m, ok := r.metrics[bi]
	if !ok {
		m = &metricAcc{start: start, ts: ts, points: map[string]*pointAcc{}}
		r.metrics[bi] = m
	}
	p, ok := m.points[pk]
	if !ok {
		p = &pointAcc{attrs: pt}
		if b.typ == MetricTypeHistogram {
			p.hist = newHistAcc(b.slots)
		}
		m.points[pk] = p
		m.order = append(m.order, pk)
	}
	return p
}

// add accumulates every entry of ms for binding b.
func (mb *metricsBuilder) add(bi int, b *metricBinding, ms *sidecarpb.MapSnapshot, cols map[string]*column, start, ts pcommon.Timestamp) {
	n := int(ms.GetEntries())
	for e := 0; e < n; e++ {
		var res, pt []attr
		for _, a := range b.attributes {
			v := attrAt(cols[a.field.name], a, e)
			if v.isStr && v.str == "" {
				// Decoders report "unknown" as an empty string (e.g. no
				// container.id for a host process): the attribute is left out
				// rather than sent empty.
				continue
			}
			if a.resource {
				res = append(res, v)
			} else {
				pt = append(pt, v)
			}
		}
		if b.typ == MetricTypeHistogram {
			p := mb.point(bi, b, res, pt, start, ts)
			slot := clampSlot(intAt(cols[b.slot.name], b.slot, e), b.slots)
			var count uint64
			if c := intAt(cols[b.count.name], b.count, e); c > 0 {
				count = uint64(c)
			}
			var sum float64
			if b.hasSum {
				sum = floatAt(cols[b.sum.name], b.sum, e)
			}
			p.hist.add(slot, count, sum)
			continue
		}
		for _, v := range b.values {
			vpt := pt
			if b.valueAttribute != "" {
				vpt = append(pt[:len(pt):len(pt)], attr{name: b.valueAttribute, str: v.attrValue, isStr: true})
			}
			p := mb.point(bi, b, res, vpt, start, ts)
			col := cols[v.field.name]
			if b.scale == 1 {
				p.i += intAt(col, v.field, e)
			} else {
				p.f += floatAt(col, v.field, e) * b.scale
			}
		}
	}
}

// build emits one ResourceMetrics per resource attribute set, in order of
// first appearance, each with one ScopeMetrics holding the metrics in
// binding order.
func (mb *metricsBuilder) build(bindings []*metricBinding, scopeVersion string) pmetric.Metrics {
	md := pmetric.NewMetrics()
	for _, rk := range mb.order {
		r := mb.resources[rk]
		rm := md.ResourceMetrics().AppendEmpty()
		putAttrs(rm.Resource().Attributes(), r.attrs)
		sm := rm.ScopeMetrics().AppendEmpty()
		sm.Scope().SetName(metadata.ScopeName)
		sm.Scope().SetVersion(scopeVersion)
		idx := make([]int, 0, len(r.metrics))
		for bi := range r.metrics {
			idx = append(idx, bi)
		}
		sort.Ints(idx)
		for _, bi := range idx {
			b := bindings[bi]
			acc := r.metrics[bi]
			m := sm.Metrics().AppendEmpty()
			m.SetName(b.name)
			m.SetDescription(b.description)
			m.SetUnit(b.unit)
			switch b.typ {
			case MetricTypeSum:
				s := m.SetEmptySum()
				s.SetAggregationTemporality(temporalityOf(b))
				s.SetIsMonotonic(true)
				for _, pk := range acc.order {
					p := acc.points[pk]
					dp := s.DataPoints().AppendEmpty()
					dp.SetStartTimestamp(acc.start)
					fillNumber(dp, b, p, acc.ts)
				}
			case MetricTypeGauge:
				g := m.SetEmptyGauge()
				for _, pk := range acc.order {
					fillNumber(g.DataPoints().AppendEmpty(), b, acc.points[pk], acc.ts)
				}
			case MetricTypeHistogram:
				if b.exponential {
					h := m.SetEmptyExponentialHistogram()
					h.SetAggregationTemporality(temporalityOf(b))
					for _, pk := range acc.order {
						p := acc.points[pk]
						dp := h.DataPoints().AppendEmpty()
						putAttrs(dp.Attributes(), p.attrs)
						p.hist.fillExponential(dp, b, acc.start, acc.ts)
					}
					continue
				}
				h := m.SetEmptyHistogram()
				h.SetAggregationTemporality(temporalityOf(b))
				for _, pk := range acc.order {
					p := acc.points[pk]
					dp := h.DataPoints().AppendEmpty()
					putAttrs(dp.Attributes(), p.attrs)
					p.hist.fill(dp, b, acc.start, acc.ts)
				}
			}
		}
	}
	return md
}

func temporalityOf(b *metricBinding) pmetric.AggregationTemporality {
	if b.delta {
		return pmetric.AggregationTemporalityDelta
	}
	return pmetric.AggregationTemporalityCumulative
}

func fillNumber(dp pmetric.NumberDataPoint, b *metricBinding, p *pointAcc, ts pcommon.Timestamp) {
	dp.SetTimestamp(ts)
	putAttrs(dp.Attributes(), p.attrs)
	if b.scale == 1 {
		dp.SetIntValue(p.i)
	} else {
		dp.SetDoubleValue(p.f)
	}
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

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
	plans        []keyPlan            // by binding index
	maps         map[mapKey]*mapState // read times, for delta start times
	tables       map[mapKey]*mapTable // maps of a changes-only stream, whole
	snapshots    uint64               // snapshots converted
	seed         maphash.Seed         // for hashes of series keys
	// noSeriesCache converts changes-only tables without their series
	// cache (tests compare the two).
	noSeriesCache bool
	// folded is, by binding index, the number of series folded into the
	// overflow at the latest conversion of its map.
	folded []int
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
		plans:        make([]keyPlan, len(bindings)),
		maps:         map[mapKey]*mapState{},
		tables:       map[mapKey]*mapTable{},
		seed:         maphash.MakeSeed(),
		folded:       make([]int, len(bindings)),
	}
	for i, b := range bindings {
		k := mapKey{b.program, b.mapName}
		c.byMap[k] = append(c.byMap[k], i)
		c.series[i] = &seriesSet{keys: map[string]*seriesEntry{}, gen: 1}
		c.plans[i] = newKeyPlan(b)
	}
	return c
}

// column is one decoded column of a MapSnapshot.
type column = sidecarpb.Column

// convert turns one snapshot into metrics. Maps with an error, or whose
// columns do not match their entry count, are logged and skipped; the other
// maps are converted.
func (c *converter) convert(snap *sidecarpb.Snapshot) pmetric.Metrics {
	if len(snap.GetMaps()) > 0 {
		started := time.Now()
		defer func() {
			took := time.Since(started)
			c.tel.snapshot(proto.Size(snap), snap.GetReadDuration().AsDuration(), took)
		}()
	}
	c.snapshots++
	out := newMetricsBuilder(c.snapshots, c.series, c.plans, c.seed)
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
		ms, table, err := c.whole(k, ms)
		if err != nil {
			c.tel.mapError(k, "malformed")
			c.logger.Error("Malformed map snapshot from the sidecar; skipping the map",
				zap.String("program", k.program), zap.String("map", k.name),
				zap.Uint64("sequence", snap.GetSequence()), zap.Error(err))
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
				*set = seriesSet{attach: attach, keys: map[string]*seriesEntry{}, gen: set.gen + 1}
			}
			start := pcommon.Timestamp(attach)
			if b.delta {
				start = deltaStart
			}
			var cache *seriesCache
			if table != nil && !c.noSeriesCache {
				cache = table.cacheFor(i, max(len(b.values), 1))
			}
			out.add(i, b, ms, cols, start, ts, table, cache)
			if cache != nil {
				c.folded[i] = foldedCached(cache, table, int(ms.GetEntries()))
			} else {
				c.folded[i] = out.folded(i)
			}
			c.noteOverflow(i, b, c.folded[i])
			c.series[i].keepOnly(out.snap)
		}
		if table != nil {
			table.reshaped = false
		}
	}
	return out.build(c.bindings, c.scopeVersion)
}

// whole returns ms as a whole map snapshot with classic columns: packed
// columns unpacked, and a changes-only stream's changes applied to the
// map's table.
func (c *converter) whole(k mapKey, ms *sidecarpb.MapSnapshot) (*sidecarpb.MapSnapshot, *mapTable, error) {
	if len(ms.GetPackedKeyColumns())+len(ms.GetPackedValueColumns()) > 0 {
		var err error
		if ms, err = unpackColumns(ms); err != nil {
			return nil, nil, err
		}
	}
	if !ms.GetChangesOnly() && len(ms.GetSlots()) == 0 {
		delete(c.tables, k)
		return ms, nil, nil
	}
	return c.applyChanges(k, ms)
}

func (c *converter) checkFull(k mapKey, ms *sidecarpb.MapSnapshot) {
	if maxEntries := ms.GetMaxEntries(); maxEntries > 0 && ms.GetEntries() >= maxEntries &&
		c.tel.mapFull(k, ms.GetAttachTimeUnixNano()) {
		c.logger.Warn("BPF map is at capacity: new keys are dropped, or evict the least recently updated ones in LRU maps; raise the program's size parameter",
			zap.String("program", k.program), zap.String("map", k.name), zap.Uint32("max_entries", maxEntries))
	}
	if n := ms.GetLateCpus(); n > 0 {
		c.tel.lateCPUs(k, n) // the sidecar logs which CPUs, once
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
//
// Series identity is computed from the attribute values, encoded into a
// reused buffer in an order fixed once per binding (keyPlan): resource
// attributes sorted by name, with their names, so that bindings share a
// resource; then the point attributes in binding order and the value
// field. The admitted series of a metric (seriesSet) are looked up with
// that buffer, which allocates nothing; each remembers its point in the
// current snapshot, so an entry of a series seen before costs one map
// lookup and no allocation. Resources, metrics and points live in slices
// and are chained by index.
type metricsBuilder struct {
	snap      uint64 // this snapshot's number (seriesEntry.snap)
	plans     []keyPlan
	series    []*seriesSet    // admitted series, by binding index
	foldedIn  [][]foldedEntry // entries with series folded in this snapshot, by binding
	folding   uint64          // the values of the current entry folded (bit per value)
	overflow  []int32         // the overflow point of each binding, -1 for none yet
	resIndex  map[string]int32
	resources []resourceAcc // in order of first appearance
	metrics   []metricAcc
	points    []pointAcc
	attrPool  []attr
	buf       []byte
	seed      maphash.Seed   // the converter's: folded-series hashes outlive a snapshot (seriesCache)
	cur       []*seriesEntry // the current entry's series, by value field (resolve)
	admitted  []bool         // by binding: a series was admitted in this snapshot
}

// keyPlan is the order in which a binding's attributes enter its keys.
type keyPlan struct {
	res []int // indexes into attributes: resource attributes by name
	pt  []int // point attributes, in binding order
	// by value field: the first value field with the same value-attribute
	// value (points with equal attributes are one point)
	value []int32
}

func newKeyPlan(b *metricBinding) keyPlan {
	var p keyPlan
	for i, a := range b.attributes {
		if a.resource {
			p.res = append(p.res, i)
		} else {
			p.pt = append(p.pt, i)
		}
	}
	sort.SliceStable(p.res, func(i, j int) bool {
		return b.attributes[p.res[i]].name < b.attributes[p.res[j]].name
	})
	first := map[string]int32{}
	for v, ref := range b.values {
		if _, ok := first[ref.attrValue]; !ok {
			first[ref.attrValue] = int32(v)
		}
		p.value = append(p.value, first[ref.attrValue])
	}
	return p
}

type resourceAcc struct {
	attrs   []attr
	metrics int32 // first of its metrics (chained by metricAcc.next), -1 for none
}

type metricAcc struct {
	bi          int
	start, ts   pcommon.Timestamp
	next        int32 // the resource's next metric, -1 at the end
	first, last int32 // its points, chained by pointAcc.next
}

type pointAcc struct {
	attrs []attr
	i     int64
	f     float64
	hist  *histAcc
	next  int32
}

// foldedEntry is an entry some of whose series were folded: a hash of its
// series key but the value, and its values folded (bit per value).
type foldedEntry struct {
	hash   uint64
	values uint64
}

// folded is the number of distinct series of binding bi folded into its
// overflow series in this snapshot (entries with the same key hash are one
// series set: a hash collision only undercounts this self-metric).
func (mb *metricsBuilder) folded(bi int) int {
	return countFolded(mb.foldedIn[bi])
}

// countFolded is the number of distinct (series, value field) pairs among
// folded entries (sorted in place).
func countFolded(entries []foldedEntry) int {
	slices.SortFunc(entries, func(a, b foldedEntry) int { return cmp.Compare(a.hash, b.hash) })
	n := 0
	for i := 0; i < len(entries); {
		values := uint64(0)
		j := i
		for ; j < len(entries) && entries[j].hash == entries[i].hash; j++ {
			values |= entries[j].values
		}
		n += bits.OnesCount64(values)
		i = j
	}
	return n
}

func newMetricsBuilder(snap uint64, series []*seriesSet, plans []keyPlan, seed maphash.Seed) *metricsBuilder {
	mb := &metricsBuilder{
		snap:     snap,
		plans:    plans,
		series:   series,
		foldedIn: make([][]foldedEntry, len(series)),
		admitted: make([]bool, len(series)),
		overflow: make([]int32, len(series)),
		resIndex: map[string]int32{},
		seed:     seed,
	}
	for i := range mb.overflow {
		mb.overflow[i] = -1
	}
	return mb
}

// grow sizes the builder's slices and resource index up front for n more
// entries with points per entry.
func (mb *metricsBuilder) grow(n, points int) {
	if len(mb.resources) == 0 {
		mb.resIndex = make(map[string]int32, n)
	}
	mb.resources = slicesGrow(mb.resources, n)
	mb.metrics = slicesGrow(mb.metrics, n)
	mb.points = slicesGrow(mb.points, n*points)
}

func slicesGrow[T any](s []T, n int) []T {
	if cap(s)-len(s) < n {
		t := make([]T, len(s), len(s)+n)
		copy(t, s)
		return t
	}
	return s
}

// appendAttr encodes one attribute value; false when it is left out (an
// empty string: decoders report "unknown" that way, e.g. no container.id
// for a host process, and the attribute is left out rather than sent empty).
func appendAttr(buf []byte, col *column, a *attributeBinding, e int) ([]byte, bool) {
	if a.field.typ == sidecarpb.FieldType_FIELD_TYPE_STRING {
		s := col.GetStrings()[e]
		if s == "" {
			return buf, false
		}
		buf = append(buf, 's')
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		return append(buf, s...), true
	}
	buf = append(buf, 'i')
	return binary.LittleEndian.AppendUint64(buf, uint64(intAt(col, a.field, e))), true
}

// entryKey encodes entry e's series key but for the value field into
// mb.buf: 4 bytes of resource key length, the resource key, the point key.
func (mb *metricsBuilder) entryKey(b *metricBinding, plan *keyPlan, cols []*column, e int) (base, rkEnd int) {
	buf := append(mb.buf[:0], 0, 0, 0, 0)
	for _, ai := range plan.res {
		a := &b.attributes[ai]
		mark := len(buf)
		buf = binary.AppendUvarint(buf, uint64(len(a.name)))
		buf = append(buf, a.name...)
		var ok bool
		if buf, ok = appendAttr(buf, cols[ai], a, e); !ok {
			buf = buf[:mark]
		}
	}
	rkEnd = len(buf)
	binary.LittleEndian.PutUint32(buf, uint32(rkEnd-4))
	for _, ai := range plan.pt {
		var ok bool
		if buf, ok = appendAttr(buf, cols[ai], &b.attributes[ai], e); !ok {
			buf = append(buf, 0)
		}
	}
	mb.buf = buf
	return len(buf), rkEnd
}

// seriesOf returns the admitted series whose key is mb.buf[:base] and value
// field value, admitting it while the binding's limit allows; nil when it
// is folded into the overflow series (noted in mb.folding).
func (mb *metricsBuilder) seriesOf(bi int, b *metricBinding, base int, value int32) *seriesEntry {
	mb.buf = binary.LittleEndian.AppendUint32(mb.buf[:base], uint32(value))
	set := mb.series[bi]
	entry, ok := set.keys[string(mb.buf)]
	if !ok {
		if len(set.keys) >= b.limit {
			mb.folding |= 1 << min(uint64(value), 63) // counted by add (see folded)
			return nil
		}
		entry = &seriesEntry{key: string(mb.buf)}
		set.keys[entry.key] = entry
		mb.admitted[bi] = true
	}
	return entry
}

// pointFor returns the accumulator of series entry's point in this
// snapshot, made from entry e's attributes on the series' first entry; the
// overflow series' for a nil entry.
func (mb *metricsBuilder) pointFor(bi int, b *metricBinding, plan *keyPlan, cols []*column, e int, entry *seriesEntry, value int32, start, ts pcommon.Timestamp) *pointAcc {
	if entry == nil {
		return mb.overflowPoint(bi, b, start, ts)
	}
	if entry.snap == mb.snap {
		return &mb.points[entry.point]
	}
	entry.snap = mb.snap
	// the key starts with the resource key's length, then the resource key
	rk := entry.key[4 : 4+binary.LittleEndian.Uint32([]byte(entry.key[:4]))]
	r, ok := mb.resIndex[rk]
	if !ok {
		from := len(mb.attrPool)
		for _, ai := range plan.res {
			if v, ok := attrOf(cols[ai], &b.attributes[ai], e); ok {
				mb.attrPool = append(mb.attrPool, v)
			}
		}
		r = mb.newResource(rk, mb.attrPool[from:len(mb.attrPool):len(mb.attrPool)])
	}
	entry.point = mb.newPoint(r, bi, b, start, ts, mb.pointAttrs(b, plan, cols, e, value))
	return &mb.points[entry.point]
}

// overflowPoint is binding bi's overflow series (resource without
// attributes, otel.metric.overflow=true).
func (mb *metricsBuilder) overflowPoint(bi int, b *metricBinding, start, ts pcommon.Timestamp) *pointAcc {
	if p := mb.overflow[bi]; p >= 0 {
		return &mb.points[p]
	}
	r, ok := mb.resIndex[""]
	if !ok {
		r = mb.newResource("", nil)
	}
	mb.overflow[bi] = mb.newPoint(r, bi, b, start, ts, overflowAttrs)
	return &mb.points[mb.overflow[bi]]
}

func (mb *metricsBuilder) newResource(key string, attrs []attr) int32 {
	r := int32(len(mb.resources))
	if len(attrs) == 0 {
		attrs = nil
	}
	mb.resources = append(mb.resources, resourceAcc{attrs: attrs, metrics: -1})
	mb.resIndex[key] = r
	return r
}

// newPoint adds a point with attrs to resource r's metric of binding bi.
func (mb *metricsBuilder) newPoint(r int32, bi int, b *metricBinding, start, ts pcommon.Timestamp, attrs []attr) int32 {
	m := mb.metric(r, bi, start, ts)
	p := int32(len(mb.points))
	mb.points = append(mb.points, pointAcc{attrs: attrs, next: -1})
	if b.typ == MetricTypeHistogram {
		mb.points[p].hist = newHistAcc(b.slots)
	}
	ma := &mb.metrics[m]
	if ma.last < 0 {
		ma.first = p
	} else {
		mb.points[ma.last].next = p
	}
	ma.last = p
	return p
}

// attrOf is attribute a of entry e; false when it is left out (see appendAttr).
func attrOf(col *column, a *attributeBinding, e int) (attr, bool) {
	v := attrAt(col, *a, e)
	return v, !v.isStr || v.str != ""
}

// metric returns resource r's metric of binding bi, made on first use.
func (mb *metricsBuilder) metric(r int32, bi int, start, ts pcommon.Timestamp) int32 {
	last := int32(-1)
	for m := mb.resources[r].metrics; m >= 0; m = mb.metrics[m].next {
		if mb.metrics[m].bi == bi {
			return m
		}
		last = m
	}
	m := int32(len(mb.metrics))
	mb.metrics = append(mb.metrics, metricAcc{bi: bi, start: start, ts: ts, next: -1, first: -1, last: -1})
	if last < 0 {
		mb.resources[r].metrics = m
	} else {
		mb.metrics[last].next = m
	}
	return m
}

// pointAttrs are the attributes of a new point: entry e's point attributes
// and the value attribute.
func (mb *metricsBuilder) pointAttrs(b *metricBinding, plan *keyPlan, cols []*column, e int, value int32) []attr {
	start := len(mb.attrPool)
	for _, ai := range plan.pt {
		if v, ok := attrOf(cols[ai], &b.attributes[ai], e); ok {
			mb.attrPool = append(mb.attrPool, v)
		}
	}
	if b.valueAttribute != "" {
		mb.attrPool = append(mb.attrPool, attr{name: b.valueAttribute, str: b.values[value].attrValue, isStr: true})
	}
	if len(mb.attrPool) == start {
		return nil
	}
	return mb.attrPool[start:len(mb.attrPool):len(mb.attrPool)]
}

// add accumulates every entry of ms for binding b. With a changes-only
// table's cache, an entry whose slot the cache holds skips its series
// lookup (seriesCache).
func (mb *metricsBuilder) add(bi int, b *metricBinding, ms *sidecarpb.MapSnapshot, cols map[string]*column, start, ts pcommon.Timestamp, table *mapTable, cache *seriesCache) {
	n := int(ms.GetEntries())
	plan := &mb.plans[bi]
	attrCols := make([]*column, len(b.attributes))
	for i, a := range b.attributes {
		attrCols[i] = cols[a.field.name]
	}
	points := len(b.values)
	if points == 0 {
		points = 1
	}
	// at most the admitted series and the overflow: a large map's entries
	// beyond the limit all fold into one point
	series := min(n, b.limit+1)
	mb.grow(series, points)
	mb.attrPool = slicesGrow(mb.attrPool, series*(len(b.attributes)+1))
	if cap(mb.cur) < points {
		mb.cur = make([]*seriesEntry, points)
	}
	cur := mb.cur[:points]
	slot := func(e int) int { return e }
	if table != nil {
		slot = table.slotOf
	}
	if b.typ == MetricTypeHistogram {
		slotCol, countCol := cols[b.slot.name], cols[b.count.name]
		var sumCol *column
		if b.hasSum {
			sumCol = cols[b.sum.name]
		}
		for e := 0; e < n; e++ {
			mb.resolve(bi, b, plan, attrCols, e, cur, cache, slot(e))
			p := mb.pointFor(bi, b, plan, attrCols, e, cur[0], 0, start, ts)
			slot := clampSlot(intAt(slotCol, b.slot, e), b.slots)
			var count uint64
			if c := intAt(countCol, b.count, e); c > 0 {
				count = uint64(c)
			}
			var sum float64
			if b.hasSum {
				sum = floatAt(sumCol, b.sum, e)
			}
			p.hist.add(slot, count, sum)
		}
		return
	}
	valueCols := make([]*column, len(b.values))
	for v, ref := range b.values {
		valueCols[v] = cols[ref.field.name]
	}
	for e := 0; e < n; e++ {
		mb.resolve(bi, b, plan, attrCols, e, cur, cache, slot(e))
		for v, ref := range b.values {
			p := mb.pointFor(bi, b, plan, attrCols, e, cur[v], plan.value[v], start, ts)
			if b.scale == 1 {
				p.i += intAt(valueCols[v], ref.field, e)
			} else {
				p.f += floatAt(valueCols[v], ref.field, e) * b.scale
			}
		}
	}
}

// resolve sets cur to entry e's series, one per value field (nil where
// folded into the overflow series). With a cache (entry e in slot s):
// from the cache where it holds the slot under the current series set,
// unless the slot was folded and the metric has room or admitted a series
// in this conversion;
// else looked up, and the cache filled. Without one, the folded entry is recorded for
// folded().
func (mb *metricsBuilder) resolve(bi int, b *metricBinding, plan *keyPlan, cols []*column, e int, cur []*seriesEntry, cache *seriesCache, s int) {
	set := mb.series[bi]
	nv := len(cur)
	// A folded series stays folded while the metric is full and nothing was
	// admitted in this conversion: it was not admitted when last looked up,
	// and only an admission (of its own key, by another entry of the same
	// series) could change that, which needs room.
	if cache != nil && cache.gen[s] == set.gen &&
		(cache.folded[s] == 0 || (len(set.keys) >= b.limit && !mb.admitted[bi])) {
		copy(cur, cache.series[s*nv:(s+1)*nv])
		return
	}
	base, _ := mb.entryKey(b, plan, cols, e)
	for v := range cur {
		value := int32(0)
		if v < len(plan.value) {
			value = plan.value[v]
		}
		cur[v] = mb.seriesOf(bi, b, base, value)
	}
	folding := mb.folding
	mb.folding = 0
	var h uint64
	if folding != 0 {
		h = maphash.Bytes(mb.seed, mb.buf[:base])
		if cache == nil {
			mb.foldedIn[bi] = append(mb.foldedIn[bi], foldedEntry{hash: h, values: folding})
		}
	}
	if cache != nil {
		cache.counted = false // a lookup: what is folded may have changed
		cache.gen[s] = set.gen
		copy(cache.series[s*nv:(s+1)*nv], cur)
		cache.hash[s], cache.folded[s] = h, folding
	}
}

// foldedCached is folded() for a binding converted through a cache: the
// distinct folded series of the table's entries, counted again only when
// a lookup or a change of the table's shape may have changed them.
func foldedCached(cache *seriesCache, table *mapTable, n int) int {
	if cache.counted {
		return cache.count
	}
	var entries []foldedEntry
	for e := 0; e < n; e++ {
		if s := table.slotOf(e); cache.folded[s] != 0 {
			entries = append(entries, foldedEntry{hash: cache.hash[s], values: cache.folded[s]})
		}
	}
	cache.count, cache.counted = countFolded(entries), true
	return cache.count
}

// build emits one ResourceMetrics per resource attribute set, in order of
// first appearance, each with one ScopeMetrics holding the metrics in
// binding order.
func (mb *metricsBuilder) build(bindings []*metricBinding, scopeVersion string) pmetric.Metrics {
	md := pmetric.NewMetrics()
	md.ResourceMetrics().EnsureCapacity(len(mb.resources))
	var idx []int32
	for ri := range mb.resources {
		r := &mb.resources[ri]
		if r.metrics < 0 {
			continue // its series were all folded into the overflow
		}
		rm := md.ResourceMetrics().AppendEmpty()
		putAttrs(rm.Resource().Attributes(), r.attrs)
		sm := rm.ScopeMetrics().AppendEmpty()
		sm.Scope().SetName(metadata.ScopeName)
		sm.Scope().SetVersion(scopeVersion)
		idx = idx[:0]
		for m := r.metrics; m >= 0; m = mb.metrics[m].next {
			idx = append(idx, m)
		}
		sort.Slice(idx, func(i, j int) bool { return mb.metrics[idx[i]].bi < mb.metrics[idx[j]].bi })
		sm.Metrics().EnsureCapacity(len(idx))
		for _, mi := range idx {
			acc := &mb.metrics[mi]
			b := bindings[acc.bi]
			m := sm.Metrics().AppendEmpty()
			m.SetName(b.name)
			m.SetDescription(b.description)
			m.SetUnit(b.unit)
			switch b.typ {
			case MetricTypeSum:
				s := m.SetEmptySum()
				s.SetAggregationTemporality(temporalityOf(b))
				s.SetIsMonotonic(true)
				for p := acc.first; p >= 0; p = mb.points[p].next {
					dp := s.DataPoints().AppendEmpty()
					dp.SetStartTimestamp(acc.start)
					fillNumber(dp, b, &mb.points[p], acc.ts)
				}
			case MetricTypeGauge:
				g := m.SetEmptyGauge()
				for p := acc.first; p >= 0; p = mb.points[p].next {
					fillNumber(g.DataPoints().AppendEmpty(), b, &mb.points[p], acc.ts)
				}
			case MetricTypeHistogram:
				if b.exponential {
					h := m.SetEmptyExponentialHistogram()
					h.SetAggregationTemporality(temporalityOf(b))
					for p := acc.first; p >= 0; p = mb.points[p].next {
						pt := &mb.points[p]
						dp := h.DataPoints().AppendEmpty()
						putAttrs(dp.Attributes(), pt.attrs)
						pt.hist.fillExponential(dp, b, acc.start, acc.ts)
					}
					continue
				}
				h := m.SetEmptyHistogram()
				h.SetAggregationTemporality(temporalityOf(b))
				for p := acc.first; p >= 0; p = mb.points[p].next {
					pt := &mb.points[p]
					dp := h.DataPoints().AppendEmpty()
					putAttrs(dp.Attributes(), pt.attrs)
					pt.hist.fill(dp, b, acc.start, acc.ts)
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

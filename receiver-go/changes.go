package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// The two opt-in forms of a map snapshot (StreamRequest.packed_columns and
// changes_only) are turned back into a whole map snapshot with classic
// columns before conversion, so that both convert exactly as a whole
// snapshot does.

// unpackColumns returns ms with its packed columns as classic ones.
// Numbers are copied out of the little-endian bytes; a string column
// becomes per-entry references to its dictionary's strings (no string is
// allocated per entry).
func unpackColumns(ms *sidecarpb.MapSnapshot) (*sidecarpb.MapSnapshot, error) {
	n := int(ms.GetEntries())
	unpack := func(pcs []*sidecarpb.PackedColumn) ([]*column, error) {
		out := make([]*column, 0, len(pcs))
		for _, pc := range pcs {
			col := &column{Field: pc.GetField()}
			switch pc.GetType() {
			case sidecarpb.FieldType_FIELD_TYPE_UINT, sidecarpb.FieldType_FIELD_TYPE_INT:
				w, err := packedWidth(pc, 8)
				if err != nil {
					return nil, err
				}
				raw := pc.GetValues()
				if len(raw) != w*n {
					return nil, fmt.Errorf("packed column %q has %d bytes of values for %d entries (%d a value)", pc.GetField(), len(raw), n, w)
				}
				if pc.GetType() == sidecarpb.FieldType_FIELD_TYPE_UINT {
					col.Uints = make([]uint64, n)
					for i := range col.Uints {
						col.Uints[i] = leUint(raw[w*i:], w)
					}
				} else {
					col.Ints = make([]int64, n)
					shift := 64 - 8*w
					for i := range col.Ints {
						col.Ints[i] = int64(leUint(raw[w*i:], w)<<shift) >> shift // sign-extended
					}
				}
			case sidecarpb.FieldType_FIELD_TYPE_STRING:
				w, err := packedWidth(pc, 4)
				if err != nil {
					return nil, err
				}
				dict, idx := pc.GetDictionary(), pc.GetIndexes()
				if len(idx) != w*n {
					return nil, fmt.Errorf("packed column %q has %d bytes of indexes for %d entries (%d an index)", pc.GetField(), len(idx), n, w)
				}
				col.Strings = make([]string, n)
				for i := range col.Strings {
					j := leUint(idx[w*i:], w)
					if j >= uint64(len(dict)) {
						return nil, fmt.Errorf("packed column %q: entry %d refers to string %d of a dictionary of %d", pc.GetField(), i, j, len(dict))
					}
					col.Strings[i] = dict[j]
				}
			default:
				return nil, fmt.Errorf("packed column %q has unsupported type %s", pc.GetField(), pc.GetType())
			}
			out = append(out, col)
		}
		return out, nil
	}
	keys, err := unpack(ms.GetPackedKeyColumns())
	if err != nil {
		return nil, err
	}
	values, err := unpack(ms.GetPackedValueColumns())
	if err != nil {
		return nil, err
	}
	return &sidecarpb.MapSnapshot{
		Program: ms.GetProgram(), Map: ms.GetMap(), AttachTimeUnixNano: ms.GetAttachTimeUnixNano(),
		Entries: ms.GetEntries(), MaxEntries: ms.GetMaxEntries(), DroppedUpdates: ms.GetDroppedUpdates(),
		KeyColumns:   append(keys, ms.GetKeyColumns()...),
		ValueColumns: append(values, ms.GetValueColumns()...),
		ChangesOnly:  ms.GetChangesOnly(), Slots: ms.GetSlots(), RemovedSlots: ms.GetRemovedSlots(),
		LateCpus: ms.GetLateCpus(),
	}, nil
}

// packedWidth is pc's bytes per value: 1, 2, 4 or 8 (0 is def).
func packedWidth(pc *sidecarpb.PackedColumn, def int) (int, error) {
	switch w := int(pc.GetWidth()); w {
	case 0:
		return def, nil
	case 1, 2, 4, 8:
		return w, nil
	default:
		return 0, fmt.Errorf("packed column %q has width %d; 1, 2, 4 or 8 bytes", pc.GetField(), w)
	}
}

// leUint reads a little-endian unsigned integer of w bytes.
func leUint(b []byte, w int) uint64 {
	switch w {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	default:
		return binary.LittleEndian.Uint64(b)
	}
}

// mapTable is the whole map a changes-only stream has sent so far: its
// columns by slot.
type mapTable struct {
	attach  uint64
	keys    []*column
	values  []*column
	live    []bool
	entries int
	// order is the slot of each entry of the latest whole snapshot made of
	// the table (nil: entry i is slot i).
	order []int32
	// caches are the series each slot went to at the previous conversion,
	// by binding index (seriesCache).
	caches map[int]*seriesCache
	// reshaped: since the previous conversion, a slot came, went or had
	// its key columns change.
	reshaped bool
}

// seriesCache remembers, for one binding of a changes-only table, which
// series each slot's entry went to when it was last converted. Most
// entries of a large map keep their key from one snapshot to the next
// (only their values change), and the attributes, hence the series, come
// from the key alone: such an entry skips encoding and looking up its
// series key, which is most of a conversion's cost per entry. A slot's
// cache is dropped when its key columns change or it is removed, and is
// only used under the seriesSet generation it was filled under. A series
// folded into the overflow is looked up again whenever the metric has
// room (its series may be admitted now, as a whole conversion would).
type seriesCache struct {
	values  int
	gen     []uint64       // by slot: the seriesSet generation it holds (0: none)
	series  []*seriesEntry // by slot and value field: the admitted series, nil if folded
	hash    []uint64       // by slot: a hash of its series key but the value (folded series)
	folded  []uint64       // by slot: its value fields folded, a bit each
	count   int            // distinct series folded at the previous conversion
	counted bool           // count holds for the table as it is (nothing reshaped since)
}

// cacheFor is binding bi's series cache (values: its value fields).
func (t *mapTable) cacheFor(bi, values int) *seriesCache {
	if t.caches == nil {
		t.caches = map[int]*seriesCache{}
	}
	sc := t.caches[bi]
	if sc == nil || sc.values != values {
		sc = &seriesCache{values: values}
		t.caches[bi] = sc
	}
	if n := len(t.live); len(sc.gen) < n {
		sc.gen = append(sc.gen, make([]uint64, n-len(sc.gen))...)
		sc.series = append(sc.series, make([]*seriesEntry, n*values-len(sc.series))...)
		sc.hash = append(sc.hash, make([]uint64, n-len(sc.hash))...)
		sc.folded = append(sc.folded, make([]uint64, n-len(sc.folded))...)
	}
	if t.reshaped {
		sc.counted = false
	}
	return sc
}

// forget drops slot s from every binding's cache: its key changed or it
// is gone.
func (t *mapTable) forget(s int) {
	t.reshaped = true
	for _, sc := range t.caches {
		if s < len(sc.gen) {
			sc.gen[s] = 0
		}
	}
}

// slotOf is the slot of entry e of the table's latest whole snapshot.
func (t *mapTable) slotOf(e int) int {
	if t.order == nil {
		return e
	}
	return int(t.order[e])
}

var errNoWholeMap = errors.New("changes arrived for a map whose whole snapshot was not received; waiting for the next whole one")

func slotsOf(raw []byte, what string) ([]uint32, error) {
	if len(raw)%4 != 0 {
		return nil, fmt.Errorf("%s has %d bytes, not a multiple of 4", what, len(raw))
	}
	out := make([]uint32, len(raw)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return out, nil
}

// maxSlot bounds the slots a sidecar may use: a map has at most 2^32
// entries, but a slot far beyond the entries sent is a broken snapshot
// that would make the receiver allocate without limit.
func maxSlot(ms *sidecarpb.MapSnapshot, t *mapTable) int {
	limit := 2*int(ms.GetMaxEntries()) + 2*int(ms.GetEntries()) + 1024
	if t != nil {
		limit += 2 * len(t.live)
	}
	return limit
}

// applyChanges folds a slotted map snapshot (whole or changes) into the
// table of its map and returns the whole map as one snapshot, and the table.
func (c *converter) applyChanges(k mapKey, ms *sidecarpb.MapSnapshot) (*sidecarpb.MapSnapshot, *mapTable, error) {
	slots, err := slotsOf(ms.GetSlots(), "slots")
	if err != nil {
		return nil, nil, err
	}
	removed, err := slotsOf(ms.GetRemovedSlots(), "removed_slots")
	if err != nil {
		return nil, nil, err
	}
	n := int(ms.GetEntries())
	if len(slots) != n {
		return nil, nil, fmt.Errorf("%d slots for %d entries", len(slots), n)
	}
	t := c.tables[k]
	if !ms.GetChangesOnly() {
		t = &mapTable{attach: ms.GetAttachTimeUnixNano()}
		t.keys = emptyLike(ms.GetKeyColumns())
		t.values = emptyLike(ms.GetValueColumns())
		c.tables[k] = t
	} else if t == nil || t.attach != ms.GetAttachTimeUnixNano() ||
		!sameFields(t.keys, ms.GetKeyColumns()) || !sameFields(t.values, ms.GetValueColumns()) {
		delete(c.tables, k)
		return nil, nil, errNoWholeMap
	}
	limit := maxSlot(ms, t)
	for _, s := range removed {
		if int(s) < len(t.live) && t.live[s] {
			t.live[s] = false
			t.entries--
			t.forget(int(s))
		}
	}
	for i, s := range slots {
		if int(s) >= limit {
			delete(c.tables, k)
			return nil, nil, fmt.Errorf("slot %d is far beyond the map's %d entries", s, ms.GetMaxEntries())
		}
		if int(s) >= len(t.live) {
			t.grow(int(s) + 1)
		}
		if !t.live[s] {
			t.live[s] = true
			t.entries++
			t.forget(int(s))
		} else if !sameKey(t.keys, ms.GetKeyColumns(), int(s), i) {
			t.forget(int(s))
		}
		for j, col := range ms.GetKeyColumns() {
			setAt(t.keys[j], col, int(s), i, len(t.live))
		}
		for j, col := range ms.GetValueColumns() {
			setAt(t.values[j], col, int(s), i, len(t.live))
		}
	}
	return t.snapshot(ms), t, nil
}

// sameKey tells whether entry i of src has the key columns slot s of dst
// holds.
func sameKey(dst, src []*column, s, i int) bool {
	for j, col := range src {
		d := dst[j]
		switch {
		case i < len(col.GetUints()):
			if s >= len(d.Uints) || d.Uints[s] != col.GetUints()[i] {
				return false
			}
		case i < len(col.GetInts()):
			if s >= len(d.Ints) || d.Ints[s] != col.GetInts()[i] {
				return false
			}
		case i < len(col.GetStrings()):
			if s >= len(d.Strings) || d.Strings[s] != col.GetStrings()[i] {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func emptyLike(cols []*column) []*column {
	out := make([]*column, len(cols))
	for i, col := range cols {
		out[i] = &column{Field: col.GetField()}
		switch {
		case col.Uints != nil:
			out[i].Uints = []uint64{}
		case col.Ints != nil:
			out[i].Ints = []int64{}
		case col.Strings != nil:
			out[i].Strings = []string{}
		}
	}
	return out
}

func sameFields(a, b []*column) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetField() != b[i].GetField() {
			return false
		}
	}
	return true
}

// setAt copies entry i of src into slot s of dst, a column of size
// entries that takes src's kind when it has none yet (an empty column of a
// whole snapshot says nothing of its kind).
func setAt(dst, src *column, s, i, size int) {
	if dst.Uints == nil && dst.Ints == nil && dst.Strings == nil {
		switch {
		case src.Uints != nil:
			dst.Uints = make([]uint64, size)
		case src.Ints != nil:
			dst.Ints = make([]int64, size)
		case src.Strings != nil:
			dst.Strings = make([]string, size)
		}
	}
	if i < len(src.GetUints()) && s < len(dst.Uints) {
		dst.Uints[s] = src.GetUints()[i]
	}
	if i < len(src.GetInts()) && s < len(dst.Ints) {
		dst.Ints[s] = src.GetInts()[i]
	}
	if i < len(src.GetStrings()) && s < len(dst.Strings) {
		dst.Strings[s] = src.GetStrings()[i]
	}
}

func (t *mapTable) grow(size int) {
	size = max(size, 2*len(t.live))
	t.live = append(t.live, make([]bool, size-len(t.live))...)
	for _, cols := range [][]*column{t.keys, t.values} {
		for _, col := range cols {
			switch {
			case col.Uints != nil:
				col.Uints = append(col.Uints, make([]uint64, size-len(col.Uints))...)
			case col.Ints != nil:
				col.Ints = append(col.Ints, make([]int64, size-len(col.Ints))...)
			case col.Strings != nil:
				col.Strings = append(col.Strings, make([]string, size-len(col.Strings))...)
			}
		}
	}
}

// snapshot is the table as a whole map snapshot (entries in slot order;
// the columns are the table's own when the live slots are the first ones,
// as after a whole snapshot and while entries come and go in step, copies
// otherwise).
func (t *mapTable) snapshot(ms *sidecarpb.MapSnapshot) *sidecarpb.MapSnapshot {
	hi := len(t.live) // one past the last live slot
	for hi > 0 && !t.live[hi-1] {
		hi--
	}
	dense := t.entries == hi
	t.order = t.order[:0]
	if dense {
		t.order = nil
	} else {
		for s, ok := range t.live {
			if ok {
				t.order = append(t.order, int32(s))
			}
		}
	}
	pick := func(cols []*column) []*column {
		out := make([]*column, len(cols))
		for j, col := range cols {
			o := &column{Field: col.GetField()}
			switch {
			case col.Uints != nil:
				o.Uints = compact(col.Uints, t.live, t.entries, dense)
			case col.Ints != nil:
				o.Ints = compact(col.Ints, t.live, t.entries, dense)
			case col.Strings != nil:
				o.Strings = compact(col.Strings, t.live, t.entries, dense)
			}
			out[j] = o
		}
		return out
	}
	return &sidecarpb.MapSnapshot{
		Program: ms.GetProgram(), Map: ms.GetMap(), AttachTimeUnixNano: ms.GetAttachTimeUnixNano(),
		Entries: uint32(t.entries), MaxEntries: ms.GetMaxEntries(), DroppedUpdates: ms.GetDroppedUpdates(),
		KeyColumns: pick(t.keys), ValueColumns: pick(t.values), LateCpus: ms.GetLateCpus(),
	}
}

func compact[T any](vals []T, live []bool, n int, dense bool) []T {
	if dense { // the live slots are the first n
		return vals[:n:n]
	}
	out := make([]T, 0, n)
	for s, ok := range live {
		if ok {
			out = append(out, vals[s])
		}
	}
	return out
}

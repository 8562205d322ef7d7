package ebpfreceiver

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// processEntry is one entry of a cpu/process_cpu read.
type processEntry struct {
	pid              uint64
	comm             string
	cgroup           uint64
	container, pod   string
	oncpu, vol, invo uint64
}

func (e processEntry) key() string { return fmt.Sprintf("%d/%s/%d", e.pid, e.comm, e.cgroup) }

func processSnapshot(seq uint64, entries []processEntry) *sidecarpb.Snapshot {
	ms := &sidecarpb.MapSnapshot{Program: "cpu", Map: "process_cpu", AttachTimeUnixNano: 1_000, Entries: uint32(len(entries)), MaxEntries: 1024}
	cols := map[string]*column{}
	for _, name := range []string{"pid", "comm", "cgroup_id", "container_id", "pod_uid"} {
		cols[name] = &column{Field: name}
		ms.KeyColumns = append(ms.KeyColumns, cols[name])
	}
	for _, name := range []string{"oncpu_ns", "voluntary", "involuntary"} {
		cols[name] = &column{Field: name}
		ms.ValueColumns = append(ms.ValueColumns, cols[name])
	}
	for _, e := range entries {
		cols["pid"].Uints = append(cols["pid"].Uints, e.pid)
		cols["comm"].Strings = append(cols["comm"].Strings, e.comm)
		cols["cgroup_id"].Uints = append(cols["cgroup_id"].Uints, e.cgroup)
		cols["container_id"].Strings = append(cols["container_id"].Strings, e.container)
		cols["pod_uid"].Strings = append(cols["pod_uid"].Strings, e.pod)
		cols["oncpu_ns"].Uints = append(cols["oncpu_ns"].Uints, e.oncpu)
		cols["voluntary"].Uints = append(cols["voluntary"].Uints, e.vol)
		cols["involuntary"].Uints = append(cols["involuntary"].Uints, e.invo)
	}
	return &sidecarpb.Snapshot{Sequence: seq, TimeUnixNano: 2_000 + seq*1_000, Maps: []*sidecarpb.MapSnapshot{ms}}
}

// changesStream does what the sidecar does for a changes-only stream
// (ebpf_sidecar.maps.Changes): slots per key, a whole map every fullEvery
// snapshots, otherwise the changed entries and the removed slots, in
// packed columns.
type changesStream struct {
	fullEvery int
	reads     int
	slots     map[string]uint32
	sent      map[string]processEntry
	free      []uint32
	next      uint32
}

func (s *changesStream) snapshot(seq uint64, entries []processEntry) *sidecarpb.Snapshot {
	full := s.reads%s.fullEvery == 0
	s.reads++
	var send []processEntry
	var slots, removed []uint32
	if full {
		s.slots, s.sent, s.free, s.next = map[string]uint32{}, map[string]processEntry{}, nil, 0
	}
	current := map[string]bool{}
	for _, e := range entries {
		current[e.key()] = true
	}
	for k, slot := range s.slots {
		if !current[k] {
			removed = append(removed, slot)
			s.free = append(s.free, slot)
			delete(s.slots, k)
			delete(s.sent, k)
		}
	}
	for _, e := range entries {
		slot, ok := s.slots[e.key()]
		if !ok {
			if len(s.free) > 0 {
				slot, s.free = s.free[0], s.free[1:]
			} else {
				slot = s.next
				s.next++
			}
			s.slots[e.key()] = slot
		}
		if ok && s.sent[e.key()] == e {
			continue
		}
		s.sent[e.key()] = e
		send = append(send, e)
		slots = append(slots, slot)
	}
	snap := packSnapshot(processSnapshot(seq, send))
	ms := snap.Maps[0]
	ms.ChangesOnly = !full
	ms.Slots = u32bytes(slots)
	ms.RemovedSlots = u32bytes(removed)
	return snap
}

func u32bytes(v []uint32) []byte {
	out := make([]byte, 0, 4*len(v))
	for _, x := range v {
		out = binary.LittleEndian.AppendUint32(out, x)
	}
	return out
}

// packSnapshot moves every column of snap into the packed form.
func packSnapshot(snap *sidecarpb.Snapshot) *sidecarpb.Snapshot {
	for _, ms := range snap.Maps {
		pack := func(cols []*column) []*sidecarpb.PackedColumn {
			var out []*sidecarpb.PackedColumn
			for _, col := range cols {
				pc := &sidecarpb.PackedColumn{Field: col.GetField()}
				switch {
				case col.Strings != nil:
					pc.Type = sidecarpb.FieldType_FIELD_TYPE_STRING
					index := map[string]uint32{}
					pc.Width = 2
					for _, str := range col.Strings {
						j, ok := index[str]
						if !ok {
							j = uint32(len(pc.Dictionary))
							index[str] = j
							pc.Dictionary = append(pc.Dictionary, str)
						}
						pc.Indexes = binary.LittleEndian.AppendUint16(pc.Indexes, uint16(j))
					}
				default:
					pc.Type = sidecarpb.FieldType_FIELD_TYPE_UINT
					pc.Width = 4
					for _, u := range col.Uints {
						if u > math.MaxUint32 {
							pc.Width = 8
						}
					}
					for _, u := range col.Uints {
						if pc.Width == 4 {
							pc.Values = binary.LittleEndian.AppendUint32(pc.Values, uint32(u))
						} else {
							pc.Values = binary.LittleEndian.AppendUint64(pc.Values, u)
						}
					}
				}
				out = append(out, pc)
			}
			return out
		}
		ms.PackedKeyColumns, ms.PackedValueColumns = pack(ms.KeyColumns), pack(ms.ValueColumns)
		ms.KeyColumns, ms.ValueColumns = nil, nil
	}
	return snap
}

// processHistory is a map's history: processes start, run, exit; some
// share a container, two entries of one pid in two cgroups (a process that
// moved) add up into one series when the cgroup is not an attribute.
func processHistory() [][]processEntry {
	var history [][]processEntry
	for step := uint64(0); step < 12; step++ {
		var entries []processEntry
		for pid := uint64(100); pid < 160; pid++ {
			if pid%7 == step%7 || (pid > 150 && step < 4) { // exited, or not started yet
				continue
			}
			e := processEntry{pid: pid, comm: fmt.Sprintf("p%d", pid%5), cgroup: 10 + pid%3,
				oncpu: pid * 1000, vol: pid % 11, invo: pid % 3}
			if pid%3 == 0 {
				e.container, e.pod = fmt.Sprintf("%064x", pid%3), "0a1b2c3d-0000-4000-8000-000000000001"
			}
			runs := (step + 4 - pid%4) / 4 // it runs every fourth read
			e.oncpu += runs * 500
			e.vol += runs
			entries = append(entries, e)
			if pid == 120 { // also in a second cgroup
				e.cgroup, e.oncpu = 99, 7+step
				entries = append(entries, e)
			}
		}
		if step%2 == 1 { // the map's order changes from one read to the next
			for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
				entries[i], entries[j] = entries[j], entries[i]
			}
		}
		history = append(history, entries)
	}
	return history
}

func cpuConverter(t testing.TB, limit int) *converter {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.Programs = []ProgramConfig{{Name: "cpu"}}
	cfg.CardinalityLimit = limit
	require.NoError(t, cfg.Validate())
	desc := realDescribe(t)
	res, err := resolve(cfg, desc, fakeJudge(desc))
	require.NoError(t, err)
	return newConverter(res.bindings, "1.2.3", zap.NewNop(), nopSelfTelemetry(t))
}

// A changes-only stream (packed columns, changed entries and removed
// slots, a whole map every few snapshots) exports exactly what a stream of
// whole snapshots exports over the same map history.
func TestChangesOnlyExportsWhatWholeSnapshotsExport(t *testing.T) {
	for _, fullEvery := range []int{1, 3, 100} {
		t.Run(fmt.Sprintf("full_every=%d", fullEvery), func(t *testing.T) {
			whole, changes := cpuConverter(t, 2000), cpuConverter(t, 2000)
			stream := &changesStream{fullEvery: fullEvery}
			sentEntries, allEntries := 0, 0
			for i, entries := range processHistory() {
				seq := uint64(i + 1)
				expected := whole.convert(processSnapshot(seq, entries))
				cs := stream.snapshot(seq, entries)
				// the wire, as the receiver gets it
				raw, err := proto.Marshal(cs)
				require.NoError(t, err)
				received := &sidecarpb.Snapshot{}
				require.NoError(t, proto.Unmarshal(raw, received))
				actual := changes.convert(received)
				require.NoError(t, pmetrictest.CompareMetrics(expected, actual,
					pmetrictest.IgnoreResourceMetricsOrder(),
					pmetrictest.IgnoreMetricsOrder(),
					pmetrictest.IgnoreMetricDataPointsOrder()), "snapshot %d", seq)
				require.Positive(t, expected.DataPointCount())
				sentEntries += int(received.Maps[0].GetEntries())
				allEntries += len(entries)
			}
			if fullEvery == 100 {
				assert.Less(t, sentEntries, allEntries/2, "changes-only snapshots carry fewer entries")
			}
		})
	}
}

// The series cache of a changes-only table (seriesCache) changes nothing:
// converted with and without it, the same changes-only stream exports the
// same metrics and folds the same series, whether the cardinality limit
// folds most series, some, or none. The history has processes coming and
// going (slots freed and reused), the map's order moving, and entries whose
// key stays while a decoded attribute changes (a container id resolved
// later: the same slot sent again with another key column).
func TestSeriesCacheChangesNothing(t *testing.T) {
	history := processHistory()
	for step := range history {
		for i := range history[step] {
			if e := &history[step][i]; e.pid%5 == 1 && step >= 6 {
				e.container, e.pod = fmt.Sprintf("%064x", 5000+e.pid), "0a1b2c3d-0000-4000-8000-000000000002"
			}
		}
	}
	for _, limit := range []int{3, 20, 40, 2000} {
		for _, fullEvery := range []int{1, 4, 100} {
			t.Run(fmt.Sprintf("limit=%d/full_every=%d", limit, fullEvery), func(t *testing.T) {
				reference, cached := cpuConverter(t, limit), cpuConverter(t, limit)
				reference.noSeriesCache = true
				stream := &changesStream{fullEvery: fullEvery}
				folds := 0
				for i, entries := range history {
					seq := uint64(i + 1)
					raw, err := proto.Marshal(stream.snapshot(seq, entries))
					require.NoError(t, err)
					a, b := &sidecarpb.Snapshot{}, &sidecarpb.Snapshot{}
					require.NoError(t, proto.Unmarshal(raw, a))
					require.NoError(t, proto.Unmarshal(raw, b))
					expected, actual := reference.convert(a), cached.convert(b)
					require.NoError(t, pmetrictest.CompareMetrics(expected, actual), "snapshot %d", seq)
					require.Equal(t, reference.folded, cached.folded, "series folded, snapshot %d", seq)
					for _, f := range reference.folded {
						folds += f
					}
				}
				if limit < 40 {
					assert.Positive(t, folds, "the limit folds series")
				} else if limit == 2000 {
					assert.Zero(t, folds)
				}
			})
		}
	}
}

func TestChangesWithoutAWholeMapFirstAreSkipped(t *testing.T) {
	env := newConvEnv(t, func() *Config {
		cfg := createDefaultConfig().(*Config)
		cfg.Programs = []ProgramConfig{{Name: "cpu"}}
		return cfg
	}(), realDescribe(t))
	stream := &changesStream{fullEvery: 100}
	history := processHistory()
	stream.snapshot(1, history[0]) // lost
	md := env.conv.convert(stream.snapshot(2, history[1]))
	assert.Equal(t, 0, md.DataPointCount())
	assert.Equal(t, map[string]int64{"map=process_cpu,program=cpu,reason=malformed": 1},
		env.counterValues(t, metricMapErrors))
	require.Len(t, env.logs.FilterMessageSnippet("Malformed map snapshot").All(), 1)
}

func TestMalformedPackedColumnsAreSkipped(t *testing.T) {
	conv := cpuConverter(t, 2000)
	snap := packSnapshot(processSnapshot(1, processHistory()[0]))
	snap.Maps[0].PackedKeyColumns[1].Indexes[0] = 0xff // beyond the dictionary
	assert.Equal(t, 0, conv.convert(snap).DataPointCount())
	snap = packSnapshot(processSnapshot(1, processHistory()[0]))
	snap.Maps[0].PackedValueColumns[0].Values = snap.Maps[0].PackedValueColumns[0].Values[1:]
	assert.Equal(t, 0, conv.convert(snap).DataPointCount())
	snap = packSnapshot(processSnapshot(1, processHistory()[0]))
	snap.Maps[0].PackedValueColumns[0].Width = 3
	assert.Equal(t, 0, conv.convert(snap).DataPointCount())
}

func TestPackedSignedValuesAreSignExtended(t *testing.T) {
	ms := &sidecarpb.MapSnapshot{Entries: 3, PackedValueColumns: []*sidecarpb.PackedColumn{
		{Field: "v", Type: sidecarpb.FieldType_FIELD_TYPE_INT, Width: 2, Values: []byte{0xff, 0xff, 0x00, 0x80, 0x05, 0x00}},
	}}
	out, err := unpackColumns(ms)
	require.NoError(t, err)
	assert.Equal(t, []int64{-1, -32768, 5}, out.ValueColumns[0].Ints)
}

package ebpfreceiver

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// The snapshot path's receiver side, for bench/snapshot.py (which prints
// its numbers in a table next to the sidecar's): a process_cpu-shaped
// snapshot unmarshalled and converted with the cpu program's default
// metrics, under the default cardinality limit and with every series
// admitted.
//
//	go test -run '^$' -bench BenchmarkSnapshot -benchmem
//	EBPF_BENCH_SNAPSHOT=file.pb go test -run '^$' -bench BenchmarkSnapshot -benchmem
//
// With EBPF_BENCH_BASE (the whole snapshot a changes-only stream started
// with), EBPF_BENCH_SNAPSHOT is a changes-only snapshot that follows it.
//
// Without EBPF_BENCH_SNAPSHOT (a serialized Snapshot, as the sidecar sends
// it) the snapshot is synthetic: EBPF_BENCH_ENTRIES entries (default 10000)
// of distinct pids, 200 comms and 300 cgroups, a third of them in pods.

func benchSnapshotBytes(b *testing.B) []byte {
	b.Helper()
	if file := os.Getenv("EBPF_BENCH_SNAPSHOT"); file != "" {
		raw, err := os.ReadFile(file)
		require.NoError(b, err)
		return raw
	}
	n := 10000
	if s := os.Getenv("EBPF_BENCH_ENTRIES"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	raw, err := proto.Marshal(syntheticProcessCPU(n))
	require.NoError(b, err)
	return raw
}

// syntheticProcessCPU is a read of cpu/process_cpu with n entries.
func syntheticProcessCPU(n int) *sidecarpb.Snapshot {
	pid := make([]uint64, n)
	comm := make([]string, n)
	cg := make([]uint64, n)
	ctr := make([]string, n)
	pod := make([]string, n)
	oncpu := make([]uint64, n)
	vol := make([]uint64, n)
	invol := make([]uint64, n)
	for i := 0; i < n; i++ {
		pid[i] = uint64(1000 + i)
		comm[i] = fmt.Sprintf("worker-%d", i%200)
		c := i % 300
		cg[i] = uint64(5000 + c)
		if c%3 == 0 {
			ctr[i] = fmt.Sprintf("%064x", c)
			pod[i] = fmt.Sprintf("%08x-0000-0000-0000-%012x", c/6, c/6)
		}
		oncpu[i] = uint64(i) * 1_000_003
		vol[i] = uint64(i % 1000)
		invol[i] = uint64(i % 77)
	}
	return &sidecarpb.Snapshot{Sequence: 1, TimeUnixNano: 2_000_000_000, Maps: []*sidecarpb.MapSnapshot{{
		Program: "cpu", Map: "process_cpu", AttachTimeUnixNano: 1_000_000_000, Entries: uint32(n),
		MaxEntries: 1 << 20,
		KeyColumns: []*sidecarpb.Column{
			{Field: "pid", Uints: pid},
			{Field: "comm", Strings: comm},
			{Field: "cgroup_id", Uints: cg},
			{Field: "container_id", Strings: ctr},
			{Field: "pod_uid", Strings: pod},
		},
		ValueColumns: []*sidecarpb.Column{
			{Field: "oncpu_ns", Uints: oncpu},
			{Field: "voluntary", Uints: vol},
			{Field: "involuntary", Uints: invol},
		},
	}}}
}

func benchCPUConverter(b *testing.B, limit int) *converter {
	b.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.Programs = []ProgramConfig{{Name: "cpu"}}
	cfg.CardinalityLimit = limit
	require.NoError(b, cfg.Validate())
	desc := realDescribe(b)
	res, err := resolve(cfg, desc, fakeJudge(desc))
	require.NoError(b, err)
	return newConverter(res.bindings, "bench", zap.NewNop(), nopSelfTelemetry(b))
}

func BenchmarkSnapshot(b *testing.B) {
	raw := benchSnapshotBytes(b)
	snap := &sidecarpb.Snapshot{}
	require.NoError(b, proto.Unmarshal(raw, snap))
	entries := 0
	for _, ms := range snap.GetMaps() {
		entries += int(ms.GetEntries())
	}
	perEntry := func(b *testing.B, f func()) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			f()
		}
		b.StopTimer()
		runtime.ReadMemStats(&after)
		if entries > 0 {
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N)/float64(entries), "allocs/entry")
		}
		b.ReportMetric(float64(len(raw)), "wire-bytes")
	}
	b.Run("unmarshal", func(b *testing.B) {
		perEntry(b, func() {
			s := &sidecarpb.Snapshot{}
			if err := proto.Unmarshal(raw, s); err != nil {
				b.Fatal(err)
			}
		})
	})
	for _, limit := range []struct {
		name  string
		limit int
	}{{"convert/default_limit", createDefaultConfig().(*Config).CardinalityLimit}, {"convert/all_admitted", 1 << 30}} {
		b.Run(limit.name, func(b *testing.B) {
			conv := benchCPUConverter(b, limit.limit)
			if file := os.Getenv("EBPF_BENCH_BASE"); file != "" {
				// a changes-only snapshot: the stream's whole one first
				raw, err := os.ReadFile(file)
				require.NoError(b, err)
				base := &sidecarpb.Snapshot{}
				require.NoError(b, proto.Unmarshal(raw, base))
				conv.convert(base)
			}
			conv.convert(snap) // the series are admitted; later snapshots are steady state
			perEntry(b, func() { conv.convert(snap) })
		})
	}
}

// BenchmarkChangesOnly is the receiver's side of a changes-only stream in
// steady state: a whole n-entry process_cpu snapshot with slots, then the
// same 1 % of its entries changed again and again (EBPF_BENCH_ENTRIES,
// default 10000), under the default cardinality limit; with
// EBPF_BENCH_NO_SERIES_CACHE set, without the table's series cache.
//
//	EBPF_BENCH_ENTRIES=1000000 go test -run '^$' -bench BenchmarkChangesOnly -benchmem
func BenchmarkChangesOnly(b *testing.B) {
	n := 10000
	if s := os.Getenv("EBPF_BENCH_ENTRIES"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	base := syntheticProcessCPU(n)
	slots := make([]uint32, n)
	for i := range slots {
		slots[i] = uint32(i)
	}
	base.Maps[0].Slots = u32bytes(slots)
	changed := syntheticProcessCPU(n / 100)
	ms := changed.Maps[0]
	ms.ChangesOnly, ms.Slots = true, u32bytes(slots[:n/100])
	changed.Sequence = 2
	conv := benchCPUConverter(b, createDefaultConfig().(*Config).CardinalityLimit)
	conv.noSeriesCache = os.Getenv("EBPF_BENCH_NO_SERIES_CACHE") != "" // the whole table's conversion
	conv.convert(base)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, col := range ms.ValueColumns {
			col.Uints[0]++ // a change every time
		}
		conv.convert(changed)
	}
}

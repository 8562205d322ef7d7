package ebpfreceiver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// The self-metric names README.md documents ("Self-telemetry"). The
// instruments come from metadata.yaml through mdatagen; tests read the
// counters by these names, so a rename there fails here.
const (
	metricOverflowPoints = "otelcol_receiver_ebpf_overflow_metric_points"
	metricMapErrors      = "otelcol_receiver_ebpf_map_errors"
	metricDroppedUpdates = "otelcol_receiver_ebpf_dropped_updates"
	metricFullMaps       = "otelcol_receiver_ebpf_full_map_snapshots"
	metricLateCPUs       = "otelcol_receiver_ebpf_late_cpus"
)

func TestConvertLogsFullMapOnce(t *testing.T) {
	env := newConvEnv(t, loadConfig(t, filepath.Join("testdata", "convert", "gauge", "config.yaml")), testDescribe())
	conv, logs := env.conv, env.logs
	snap := loadSnapshot(t, filepath.Join("testdata", "convert", "gauge", "snapshot.json"))
	snap.Maps[0].DroppedUpdates = 5
	conv.convert(snap)
	conv.convert(snap)
	snap.Maps[0].DroppedUpdates = 9
	conv.convert(snap)
	assert.Equal(t, 2, logs.FilterMessageSnippet("BPF map is full").Len())
	key := "map=" + snap.Maps[0].Map + ",program=" + snap.Maps[0].Program
	assert.Equal(t, map[string]int64{key: 9}, env.counterValues(t, metricDroppedUpdates))

	// A new stream of the same attach does not count the total again.
	conv2 := newConverter(env.res.bindings, "1.2.3", zap.NewNop(), conv.tel)
	conv2.convert(snap)
	assert.Equal(t, map[string]int64{key: 9}, env.counterValues(t, metricDroppedUpdates))
	// A re-attached program counts from zero.
	snap.Maps[0].AttachTimeUnixNano++
	snap.Maps[0].DroppedUpdates = 2
	conv2.convert(snap)
	assert.Equal(t, map[string]int64{key: 11}, env.counterValues(t, metricDroppedUpdates))
}

func TestMapAtCapacityIsCountedAndLoggedOncePerAttach(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum,
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	snap := func(seq, attach uint64, maxEntries uint32) *sidecarpb.Snapshot {
		s := containerSnapshot(seq, seq*10, attach, "a", "b")
		s.Maps[0].MaxEntries = maxEntries
		return s
	}
	atCapacity := func() int { return env.logs.FilterMessageSnippet("BPF map is at capacity").Len() }

	env.conv.convert(snap(1, 1, 3)) // room left
	env.conv.convert(snap(2, 1, 0)) // an array: never full
	assert.Equal(t, 0, atCapacity())
	assert.Empty(t, env.counterValues(t, metricFullMaps))

	env.conv.convert(snap(3, 1, 2))
	env.conv.convert(snap(4, 1, 2))
	assert.Equal(t, 1, atCapacity(), "logged once per attach")
	assert.Equal(t, map[string]int64{"map=by_container,program=misc": 2}, env.counterValues(t, metricFullMaps))

	env.conv.convert(snap(5, 7, 2)) // re-attached and full again
	assert.Equal(t, 2, atCapacity())
}

func TestLateCPUsOfWriteBehindReadsAreCounted(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum,
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	snap := func(seq uint64, late uint32) *sidecarpb.Snapshot {
		s := containerSnapshot(seq, seq*10, 1, "a", "b")
		s.Maps[0].LateCpus = late
		return s
	}
	env.conv.convert(snap(1, 0))
	assert.Empty(t, env.counterValues(t, metricLateCPUs))
	env.conv.convert(snap(2, 2))
	env.conv.convert(snap(3, 1))
	// each read's late CPUs add up: a CPU late in every read keeps it growing
	assert.Equal(t, map[string]int64{"map=by_container,program=misc": 3}, env.counterValues(t, metricLateCPUs))
}

func TestSnapshotSizeAndDurationsAreRecorded(t *testing.T) {
	env := newConvEnv(t, cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum,
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	}), testDescribe())
	snap := containerSnapshot(1, 2_000, 1_000, "a", "b")
	snap.ReadDuration = durationpb.New(250 * time.Millisecond)
	env.conv.convert(snap)
	env.conv.convert(&sidecarpb.Snapshot{}) // a message of events only: not a snapshot of maps

	size, err := env.tel.GetMetric("otelcol_receiver_ebpf_snapshot_size")
	require.NoError(t, err)
	sizes := size.Data.(metricdata.Histogram[int64]).DataPoints
	require.Len(t, sizes, 1)
	assert.Equal(t, uint64(1), sizes[0].Count)
	assert.Equal(t, int64(proto.Size(snap)), sizes[0].Sum)

	read, err := env.tel.GetMetric("otelcol_receiver_ebpf_snapshot_read_duration")
	require.NoError(t, err)
	reads := read.Data.(metricdata.Histogram[float64]).DataPoints
	require.Len(t, reads, 1)
	assert.InDelta(t, 0.25, reads[0].Sum, 1e-9)

	conv, err := env.tel.GetMetric("otelcol_receiver_ebpf_snapshot_convert_duration")
	require.NoError(t, err)
	assert.Equal(t, uint64(1), conv.Data.(metricdata.Histogram[float64]).DataPoints[0].Count)
}

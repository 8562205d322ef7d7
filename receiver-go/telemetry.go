package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// selfTelemetry records what the receiver folded, skipped or was told the
// kernel dropped, beside receiverhelper's accepted and refused metric
// points. The instruments are mdatagen's (metadata.yaml, "telemetry"); the
// collector exposes them with the component's attributes (receiver id,
// ...), and Prometheus adds _total to counters. It outlives streams (one
// per receiver), so that dropped updates are counted once per attach even
// across reconnects.
type selfTelemetry struct {
	tb *metadata.TelemetryBuilder

	mu      sync.Mutex
	dropped map[mapKey]droppedState
	full    map[mapKey]uint64 // attach time of the map last logged as full
	// last event drop counts, by program, event and reason
	eventDrops map[eventDropKey]droppedState

	// the agent's own cost (cost.go)
	cost *costTelemetry
}

type eventDropKey struct{ program, event, reason string }

// droppedState is the last dropped_updates seen for a map, per attach.
type droppedState struct {
	attach uint64
	count  uint64
}

func newSelfTelemetry(set component.TelemetrySettings) (*selfTelemetry, error) {
	tb, err := metadata.NewTelemetryBuilder(set)
	if err != nil {
		return nil, err
	}
	return &selfTelemetry{
		tb:         tb,
		dropped:    map[mapKey]droppedState{},
		full:       map[mapKey]uint64{},
		eventDrops: map[eventDropKey]droppedState{},
		cost:       newCostTelemetry(tb),
	}, nil
}

// snapshot records one snapshot of maps: its size on the wire, the
// sidecar's read time and the receiver's conversion time.
func (t *selfTelemetry) snapshot(size int, read, convert time.Duration) {
	ctx := context.Background()
	t.tb.ReceiverEbpfSnapshotSize.Record(ctx, int64(size))
	t.tb.ReceiverEbpfSnapshotReadDuration.Record(ctx, read.Seconds())
	t.tb.ReceiverEbpfSnapshotConvertDuration.Record(ctx, convert.Seconds())
}

func (t *selfTelemetry) overflow(metricName string, points int) {
	t.tb.ReceiverEbpfOverflowMetricPoints.Add(context.Background(), int64(points),
		metric.WithAttributes(attribute.String("metric", metricName)))
}

func (t *selfTelemetry) mapError(k mapKey, reason string) {
	t.tb.ReceiverEbpfMapErrors.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name), attribute.String("reason", reason)))
}

// droppedUpdates takes a map's dropped_updates (a total since attach) and
// counts its growth; it tells whether it grew, and the total.
func (t *selfTelemetry) droppedUpdates(k mapKey, attach, total uint64) (bool, uint64) {
	t.mu.Lock()
	prev, ok := t.dropped[k]
	t.dropped[k] = droppedState{attach: attach, count: total}
	t.mu.Unlock()
	var grew uint64
	switch {
	case !ok || prev.attach != attach:
		grew = total // re-attached: the count starts over
	case total > prev.count:
		grew = total - prev.count
	}
	if grew == 0 {
		return false, total
	}
	t.tb.ReceiverEbpfDroppedUpdates.Add(context.Background(), int64(min(grew, uint64(1)<<62)), metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name)))
	return true, total
}

// lateCPUs counts the CPUs whose cached updates a read of a write-behind
// map did not include (MapSnapshot.late_cpus).
func (t *selfTelemetry) lateCPUs(k mapKey, n uint32) {
	t.tb.ReceiverEbpfLateCpus.Add(context.Background(), int64(n), metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name)))
}

// mapFull counts a snapshot of a map at capacity and tells whether this is
// the first one since the map's program was attached (worth a log line).
func (t *selfTelemetry) mapFull(k mapKey, attach uint64) bool {
	t.tb.ReceiverEbpfFullMapSnapshots.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name)))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full[k] == attach {
		return false
	}
	t.full[k] = attach
	return true
}

// eventCounters takes a snapshot's event drop counts (Snapshot.event_drops)
// and counts their growth. Counts restart with a stream (rate_limited,
// stream_behind) or an attach (ring_buffer_full): epoch tells them apart. It
// returns how many events were dropped since the last call, by event.
func (t *selfTelemetry) eventCounters(snap *sidecarpb.Snapshot, stream uint64) map[string]uint64 {
	grewBy := map[string]uint64{}
	for _, d := range snap.GetEventDrops() {
		for _, c := range []struct {
			reason string
			epoch  uint64
			count  uint64
		}{
			{"ring_buffer_full", d.GetAttachTimeUnixNano(), d.GetRingBufferFull()},
			{"rate_limited", stream, d.GetRateLimited()},
			{"stream_behind", stream, d.GetStreamBehind()},
		} {
			k := eventDropKey{d.GetProgram(), d.GetEvent(), c.reason}
			t.mu.Lock()
			prev, ok := t.eventDrops[k]
			t.eventDrops[k] = droppedState{attach: c.epoch, count: c.count}
			t.mu.Unlock()
			var grew uint64
			switch {
			case !ok || prev.attach != c.epoch:
				grew = c.count
			case c.count > prev.count:
				grew = c.count - prev.count
			}
			if grew == 0 {
				continue
			}
			grewBy[d.GetEvent()] += grew
			t.tb.ReceiverEbpfDroppedEvents.Add(context.Background(), int64(min(grew, uint64(1)<<62)), metric.WithAttributes(
				attribute.String("program", d.GetProgram()), attribute.String("event", d.GetEvent()), attribute.String("reason", c.reason)))
		}
	}
	return grewBy
}

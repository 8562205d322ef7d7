package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
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
}

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
		tb:      tb,
		dropped: map[mapKey]droppedState{},
		full:    map[mapKey]uint64{},
	}, nil
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

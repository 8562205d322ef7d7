package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
)

// Self-telemetry instruments, beside receiverhelper's accepted and refused
// metric points. The collector exposes them with the component's
// attributes (receiver id, ...); Prometheus adds _total to counters.
const (
	metricOverflowPoints = "otelcol_receiver_ebpf_overflow_metric_points"
	metricMapErrors      = "otelcol_receiver_ebpf_map_errors"
	metricDroppedUpdates = "otelcol_receiver_ebpf_dropped_updates"
	metricFullMaps       = "otelcol_receiver_ebpf_full_map_snapshots"
)

// selfTelemetry records what the receiver folded, skipped or was told the
// kernel dropped. It outlives streams (one per receiver), so that dropped
// updates are counted once per attach even across reconnects.
type selfTelemetry struct {
	overflowPoints metric.Int64Counter
	mapErrors      metric.Int64Counter
	droppedCounter metric.Int64Counter
	fullMaps       metric.Int64Counter

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
	meter := set.MeterProvider.Meter(metadata.ScopeName)
	overflow, err1 := meter.Int64Counter(metricOverflowPoints,
		metric.WithDescription("Data points of new series folded into a metric's overflow series (attribute otel.metric.overflow=true) because the metric reached its cardinality_limit."),
		metric.WithUnit("{datapoint}"))
	mapErrors, err2 := meter.Int64Counter(metricMapErrors,
		metric.WithDescription("Map snapshots skipped: the sidecar could not read or decode the map (reason read), or its columns did not match (reason malformed)."),
		metric.WithUnit("{error}"))
	dropped, err3 := meter.Int64Counter(metricDroppedUpdates,
		metric.WithDescription("Updates the kernel program could not store because its map was full, as reported by the sidecar."),
		metric.WithUnit("{update}"))
	full, err4 := meter.Int64Counter(metricFullMaps,
		metric.WithDescription("Map snapshots with as many entries as the map holds: new keys are dropped (see dropped_updates) or, in LRU maps, evict the least recently updated ones."),
		metric.WithUnit("{snapshot}"))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, err
	}
	return &selfTelemetry{
		overflowPoints: overflow,
		mapErrors:      mapErrors,
		droppedCounter: dropped,
		fullMaps:       full,
		dropped:        map[mapKey]droppedState{},
		full:           map[mapKey]uint64{},
	}, nil
}

func (t *selfTelemetry) overflow(metricName string, points int) {
	t.overflowPoints.Add(context.Background(), int64(points),
		metric.WithAttributes(attribute.String("metric", metricName)))
}

func (t *selfTelemetry) mapError(k mapKey, reason string) {
	t.mapErrors.Add(context.Background(), 1, metric.WithAttributes(
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
	t.droppedCounter.Add(context.Background(), int64(min(grew, uint64(1)<<62)), metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name)))
	return true, total
}

// mapFull counts a snapshot of a map at capacity and tells whether this is
// the first one since the map's program was attached (worth a log line).
func (t *selfTelemetry) mapFull(k mapKey, attach uint64) bool {
	t.fullMaps.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("program", k.program), attribute.String("map", k.name)))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.full[k] == attach {
		return false
	}
	t.full[k] = attach
	return true
}

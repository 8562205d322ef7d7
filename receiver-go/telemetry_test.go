package ebpfreceiver

// The self-metric names README.md documents ("Self-telemetry"). The
// instruments come from metadata.yaml through mdatagen; tests read the
// counters by these names, so a rename there fails here.
const (
	metricOverflowPoints = "otelcol_receiver_ebpf_overflow_metric_points"
	metricMapErrors      = "otelcol_receiver_ebpf_map_errors"
	metricDroppedUpdates = "otelcol_receiver_ebpf_dropped_updates"
	metricFullMaps       = "otelcol_receiver_ebpf_full_map_snapshots"
)

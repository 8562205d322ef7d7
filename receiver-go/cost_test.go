package ebpfreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// The agent's own cost: the sidecar sends totals since attach (programs) or
// start (the sidecar); the receiver's counters add their growth.
func TestAgentCostTotalsBecomeCountersAcrossReattachAndRestart(t *testing.T) {
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	tel, err := newSelfTelemetry(tt.NewTelemetrySettings())
	require.NoError(t, err)
	snap := func(attach, runTimeNs, runs, misses, start, cpuNs, rss uint64) *sidecarpb.Snapshot {
		return &sidecarpb.Snapshot{
			Sequence: 1,
			ProgramCosts: []*sidecarpb.ProgramCost{{
				Program: "syscalls", Hook: "raw_tracepoint:sys_enter", AttachTimeUnixNano: attach,
				RunTimeNs: runTimeNs, Runs: runs, RecursionMisses: misses,
			}},
			SidecarCost: &sidecarpb.SidecarCost{StartTimeUnixNano: start, CpuTimeNs: cpuNs, MemoryRssBytes: rss},
		}
	}
	tel.cost.record(snap(10, 2e9, 100, 0, 5, 1e9, 1<<20))
	tel.cost.record(snap(10, 3e9, 150, 1, 5, 1.5e9, 2<<20))
	tel.cost.record(snap(11, 1e9, 40, 0, 6, 0.25e9, 3<<20)) // re-attached; sidecar restarted

	const key = "hook=raw_tracepoint:sys_enter,program=syscalls"
	env := &convEnv{tel: tt}
	assert.Equal(t, map[string]int64{key: 190}, env.counterValues(t, "otelcol_receiver_ebpf_program_runs"))
	assert.Equal(t, map[string]int64{key: 1}, env.counterValues(t, "otelcol_receiver_ebpf_program_recursion_misses"))
	assert.InDelta(t, 4.0, floatSum(t, tt, "otelcol_receiver_ebpf_program_run_time"), 1e-9)
	assert.InDelta(t, 1.75, floatSum(t, tt, "otelcol_receiver_ebpf_sidecar_cpu_time"), 1e-9)

	m, err := tt.GetMetric("otelcol_receiver_ebpf_sidecar_memory_rss")
	require.NoError(t, err)
	g, ok := m.Data.(metricdata.Gauge[int64])
	require.True(t, ok, "%T", m.Data)
	require.Len(t, g.DataPoints, 1)
	assert.Equal(t, int64(3<<20), g.DataPoints[0].Value, "the latest RSS, not a sum")

	// An older sidecar sends no costs: nothing is recorded, nothing breaks.
	tel.cost.record(&sidecarpb.Snapshot{Sequence: 2})
	assert.Equal(t, map[string]int64{key: 190}, env.counterValues(t, "otelcol_receiver_ebpf_program_runs"))
}

// floatSum is the value of a float64 counter summed over its data points.
func floatSum(t *testing.T, tt *componenttest.Telemetry, name string) float64 {
	t.Helper()
	m, err := tt.GetMetric(name)
	require.NoError(t, err)
	sum, ok := m.Data.(metricdata.Sum[float64])
	require.True(t, ok, "%s is a sum of float64, got %T", name, m.Data)
	assert.True(t, sum.IsMonotonic)
	var v float64
	for _, dp := range sum.DataPoints {
		v += dp.Value
	}
	return v
}

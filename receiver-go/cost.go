package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// costTelemetry turns what the sidecar reports the agent costs
// (Snapshot.program_costs, Snapshot.sidecar_cost: totals since a program's
// attach or the sidecar's start) into the receiver's self-metrics: the
// growth of each total is added to its counter, so the counters go on
// rising across reconnects, re-attaches and sidecar restarts.
type costTelemetry struct {
	tb *metadata.TelemetryBuilder

	mu       sync.Mutex
	programs map[programHook]programTotals
	sidecar  sidecarTotals
}

type programHook struct{ program, hook string }

// programTotals are a BPF program's last totals, per attach.
type programTotals struct {
	attach, runTimeNs, runs, misses uint64
}

// sidecarTotals is the sidecar's last CPU time, per start.
type sidecarTotals struct {
	start, cpuNs uint64
}

func newCostTelemetry(tb *metadata.TelemetryBuilder) *costTelemetry {
	return &costTelemetry{tb: tb, programs: map[programHook]programTotals{}}
}

// growth is how much a total grew since prev, of the same epoch; all of it
// when the epoch changed (the count started over).
func growth(sameEpoch bool, prev, total uint64) uint64 {
	switch {
	case !sameEpoch:
		return total
	case total > prev:
		return total - prev
	}
	return 0
}

// record takes an interval snapshot's cost reports.
func (c *costTelemetry) record(snap *sidecarpb.Snapshot) {
	ctx := context.Background()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range snap.GetProgramCosts() {
		k := programHook{p.GetProgram(), p.GetHook()}
		prev, ok := c.programs[k]
		same := ok && prev.attach == p.GetAttachTimeUnixNano()
		c.programs[k] = programTotals{p.GetAttachTimeUnixNano(), p.GetRunTimeNs(), p.GetRuns(), p.GetRecursionMisses()}
		attrs := metric.WithAttributes(attribute.String("program", k.program), attribute.String("hook", k.hook))
		if d := growth(same, prev.runTimeNs, p.GetRunTimeNs()); d > 0 {
			c.tb.ReceiverEbpfProgramRunTime.Add(ctx, float64(d)/1e9, attrs)
		}
		if d := growth(same, prev.runs, p.GetRuns()); d > 0 {
			c.tb.ReceiverEbpfProgramRuns.Add(ctx, int64(min(d, uint64(1)<<62)), attrs)
		}
		// 0 is recorded too: the series exists from the start, and an
		// alert on its growth has a baseline.
		c.tb.ReceiverEbpfProgramRecursionMisses.Add(ctx, int64(min(growth(same, prev.misses, p.GetRecursionMisses()), uint64(1)<<62)), attrs)
	}
	s := snap.GetSidecarCost()
	if s == nil {
		return // an older sidecar
	}
	d := growth(c.sidecar.start == s.GetStartTimeUnixNano(), c.sidecar.cpuNs, s.GetCpuTimeNs())
	c.sidecar = sidecarTotals{s.GetStartTimeUnixNano(), s.GetCpuTimeNs()}
	c.tb.ReceiverEbpfSidecarCPUTime.Add(ctx, float64(d)/1e9)
	c.tb.ReceiverEbpfSidecarMemoryRss.Record(ctx, int64(min(s.GetMemoryRssBytes(), uint64(1)<<62)))
}

package ebpfreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadatatest"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

func eventsCfg(events ...EventConfig) *Config {
	cfg := cfgWith([]ProgramConfig{{Name: "oom"}})
	cfg.Events = events
	return cfg
}

func TestEventsAreRequestedOnlyInALogsPipeline(t *testing.T) {
	desc := realDescribe(t)
	cfg := eventsCfg(EventConfig{Program: "oom"}, EventConfig{Program: "process", Name: "ebpf.process.exit", MinSeverity: "warn", RateLimit: 50})
	res, err := resolveFor(cfg, desc, fakeJudge(desc), true)
	require.NoError(t, err)
	require.Len(t, res.request.GetEvents(), 2)
	assert.Equal(t, "oom", res.request.GetEvents()[0].GetProgram())
	assert.Equal(t, "ebpf.process.exit", res.request.GetEvents()[1].GetEvent())
	assert.Equal(t, uint32(50), res.request.GetEvents()[1].GetRateLimit())
	// process is loaded for its events, without its default metrics
	var programs []string
	for _, p := range res.request.GetPrograms() {
		programs = append(programs, p.GetName())
	}
	assert.Equal(t, []string{"oom", "process"}, programs)
	for _, b := range res.bindings {
		assert.NotEqual(t, "process", b.program)
	}

	res, err = resolveFor(cfg, desc, fakeJudge(desc), false)
	require.NoError(t, err)
	assert.Empty(t, res.request.GetEvents())
}

func TestEventConfigErrorsNameTheFieldAndTheChoices(t *testing.T) {
	desc := realDescribe(t)
	for _, tt := range []struct {
		event EventConfig
		want  string
	}{
		{EventConfig{Program: "oom", Name: "ebpf.oom.kil"}, `events[0].name: program "oom" has no event "ebpf.oom.kil"; its events: ebpf.oom.kill`},
		{EventConfig{Program: "cpu"}, `events[0].program: program "cpu" sends no events; programs that send events: block, oom, process`},
		{EventConfig{Program: "nope"}, `events[0].program: unknown program "nope"; programs that send events: block, oom, process`},
	} {
		_, err := resolveFor(eventsCfg(tt.event), desc, fakeJudge(desc), false)
		assert.ErrorContains(t, err, tt.want)
	}
	cfg := eventsCfg(EventConfig{MinSeverity: "loud", RateLimit: -1})
	err := cfg.Validate()
	assert.ErrorContains(t, err, "events[0].program: must not be empty")
	assert.ErrorContains(t, err, `events[0].min_severity: "loud" is not one of trace, debug, info, warn, error, fatal`)
	assert.ErrorContains(t, err, "events[0].rate_limit: -1 is out of range")
}

func TestEventDropCountersBecomeASelfMetric(t *testing.T) {
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	tel, err := newSelfTelemetry(metadatatest.NewSettings(tt).TelemetrySettings)
	require.NoError(t, err)
	snap := func(full, limited uint64) *sidecarpb.Snapshot {
		return &sidecarpb.Snapshot{
			Maps: []*sidecarpb.MapSnapshot{{Program: "oom", Map: "oom_kills"}}, // a BPF map: no event counts
			EventDrops: []*sidecarpb.EventDrops{{
				Program: "process", Event: "ebpf.process.exit", AttachTimeUnixNano: 7,
				RingBufferFull: full, RateLimited: limited,
			}},
		}
	}
	assert.Equal(t, map[string]uint64{"ebpf.process.exit": 5}, tel.eventCounters(snap(2, 3), 1))
	assert.Equal(t, map[string]uint64{"ebpf.process.exit": 10}, tel.eventCounters(snap(2, 13), 1))
	assert.Empty(t, tel.eventCounters(snap(2, 13), 1))
	// a new stream starts its counts over; the kernel's go on with the attach
	assert.Equal(t, map[string]uint64{"ebpf.process.exit": 4}, tel.eventCounters(snap(2, 4), 2))
}

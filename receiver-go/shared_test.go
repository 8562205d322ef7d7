package ebpfreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pprofile"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/collector/receiver/xreceiver"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

func otlpLogs(t *testing.T, bodies ...string) []byte {
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, b := range bodies {
		lrs.AppendEmpty().Body().SetStr(b)
	}
	buf, err := (&plog.ProtoMarshaler{}).MarshalLogs(ld)
	require.NoError(t, err)
	return buf
}

func otlpProfiles(t *testing.T, samples int) []byte {
	pd := pprofile.NewProfiles()
	p := pd.ResourceProfiles().AppendEmpty().ScopeProfiles().AppendEmpty().Profiles().AppendEmpty()
	for range samples {
		p.Samples().AppendEmpty().Values().Append(1)
	}
	buf, err := (&pprofile.ProtoMarshaler{}).MarshalProfiles(pd)
	require.NoError(t, err)
	return buf
}

// One config in three pipelines is one receiver and one sidecar stream,
// whose maps, events and stacks reach each pipeline's consumer.
func TestOneReceiverServesMetricsLogsAndProfiles(t *testing.T) {
	sock := socketPath(t)
	withMaps := testSnapshot(t)
	withMaps.Sequence = 1
	withMaps.Profiles = otlpProfiles(t, 3)
	next := proto.Clone(withMaps).(*sidecarpb.Snapshot)
	next.Sequence = 2
	next.Profiles = nil
	// In a profiles pipeline the receiver needs a program that samples stacks.
	catalog := testDescribe()
	catalog.Programs[0].Profiles = true
	fake := &fakeSidecar{catalog: catalog, script: []*sidecarpb.Snapshot{
		withMaps,
		{Logs: otlpLogs(t, "first event", "second event")}, // an event batch between snapshots
		next,
	}}
	serve(t, sock, fake)

	f := NewFactory().(xreceiver.Factory)
	cfg := f.CreateDefaultConfig().(*Config)
	cfg.Endpoint = "unix://" + sock
	cfg.Programs = []ProgramConfig{{Name: "syscalls", Parameters: map[string]string{"per_process": "true"}}}
	set := receivertest.NewNopSettings(metadata.Type)
	metrics, logs, profiles := new(consumertest.MetricsSink), new(consumertest.LogsSink), new(consumertest.ProfilesSink)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, metrics)
	require.NoError(t, err)
	lr, err := f.CreateLogs(context.Background(), set, cfg, logs)
	require.NoError(t, err)
	pr, err := f.CreateProfiles(context.Background(), set, cfg, profiles)
	require.NoError(t, err)
	assert.Same(t, mr, lr)
	assert.Same(t, mr, pr)

	host := componenttest.NewNopHost()
	require.NoError(t, mr.Start(context.Background(), host))
	require.NoError(t, lr.Start(context.Background(), host))
	require.NoError(t, pr.Start(context.Background(), host))

	require.Eventually(t, func() bool {
		return len(metrics.AllMetrics()) == 2 && logs.LogRecordCount() == 2 && profiles.SampleCount() == 3
	}, waitFor, tick)
	assert.Equal(t, "first event", logs.AllLogs()[0].ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Body().Str())
	assert.Len(t, fake.streamRequests(), 1, "one stream for the three pipelines")
	assert.Equal(t, "syscalls", fake.streamRequests()[0].GetProfiles().GetProgram())

	require.NoError(t, mr.Shutdown(context.Background()))
	require.NoError(t, lr.Shutdown(context.Background()))
	require.NoError(t, pr.Shutdown(context.Background()))

	// A new pipeline graph (a reload) gets a new receiver for the same config.
	again, err := f.CreateLogs(context.Background(), set, cfg, logs)
	require.NoError(t, err)
	assert.NotSame(t, lr, again)
	require.NoError(t, again.Shutdown(context.Background()))
}

// Records that are not OTLP are dropped with an error log; the stream and
// the metrics go on.
func TestReceiverDropsMalformedLogs(t *testing.T) {
	sock := socketPath(t)
	snap := testSnapshot(t)
	snap.Sequence = 1
	fake := &fakeSidecar{script: []*sidecarpb.Snapshot{{Logs: []byte{0xff, 0xff, 0xff}}, snap}}
	serve(t, sock, fake)
	env := newTestReceiver(t, sock, func(c *Config) {
		c.Programs[0].Parameters = map[string]string{"per_process": "true"}
		c.CollectionInterval = time.Second
	})
	logs := new(consumertest.LogsSink)
	env.recv.nextLogs = logs
	env.start(t)
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) == 1 }, waitFor, tick)
	assert.Zero(t, logs.LogRecordCount())
	assert.Equal(t, 1, env.logs.FilterMessageSnippet("not OTLP").Len())
}

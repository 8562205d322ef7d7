package ebpfreceiver

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// fakeSidecar is a stand-in for the Python sidecar: it serves a fixed
// catalog and streams one snapshot every few milliseconds.
type fakeSidecar struct {
	sidecarpb.UnimplementedSidecarServer
	snapshot *sidecarpb.Snapshot   // template; sequence is set per send
	seqs     []uint64              // sequence numbers to send (default 1, 2, 3...)
	script   []*sidecarpb.Snapshot // if set, sent as they are instead, once

	mu        sync.Mutex
	catalog   *sidecarpb.DescribeResponse // served by Describe (default testDescribe())
	streamErr error                       // returned by Stream instead of streaming
	requests  []*sidecarpb.StreamRequest
}

func (f *fakeSidecar) Describe(context.Context, *sidecarpb.DescribeRequest) (*sidecarpb.DescribeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.catalog != nil {
		return f.catalog, nil
	}
	return testDescribe(), nil
}

// Plan answers as the sidecar's judge would, for the catalog it serves.
func (f *fakeSidecar) Plan(_ context.Context, req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
	f.mu.Lock()
	desc := f.catalog
	f.mu.Unlock()
	if desc == nil {
		desc = testDescribe()
	}
	return fakeJudge(desc, "syscalls/errors")(req)
}

// setCatalog changes what Describe serves, as an upgraded sidecar would.
func (f *fakeSidecar) setCatalog(desc *sidecarpb.DescribeResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.catalog = desc
}

// setStreamErr makes Stream fail with err, or stream again with nil.
func (f *fakeSidecar) setStreamErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streamErr = err
}

func (f *fakeSidecar) Stream(req *sidecarpb.StreamRequest, srv grpc.ServerStreamingServer[sidecarpb.Snapshot]) error {
	f.mu.Lock()
	f.requests = append(f.requests, proto.Clone(req).(*sidecarpb.StreamRequest))
	streamErr := f.streamErr
	f.mu.Unlock()
	if streamErr != nil {
		return streamErr
	}
	if f.script != nil {
		for _, snap := range f.script {
			if err := srv.Send(snap); err != nil {
				return err
			}
		}
		<-srv.Context().Done()
		return nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		seq := uint64(i + 1)
		if f.seqs != nil {
			if i >= len(f.seqs) {
				<-srv.Context().Done()
				return nil
			}
			seq = f.seqs[i]
		}
		snap := proto.Clone(f.snapshot).(*sidecarpb.Snapshot)
		snap.Sequence = seq
		if err := srv.Send(snap); err != nil {
			return err
		}
		select {
		case <-srv.Context().Done():
			return nil
		case <-tick.C:
		}
	}
}

func (f *fakeSidecar) streamRequests() []*sidecarpb.StreamRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*sidecarpb.StreamRequest(nil), f.requests...)
}

// serve starts f on a unix socket at path; stop it with the returned func.
func serve(t *testing.T, path string, f *fakeSidecar) (stop func()) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := grpc.NewServer()
	sidecarpb.RegisterSidecarServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	var once sync.Once
	stop = func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return stop
}

// serveAfter starts f on a unix socket at path once delay has passed: a
// sidecar that starts after the collector. Nothing listens before.
func serveAfter(t *testing.T, path string, f *fakeSidecar, delay time.Duration) {
	t.Helper()
	srv := grpc.NewServer()
	sidecarpb.RegisterSidecarServer(srv, f)
	timer := time.AfterFunc(delay, func() {
		lis, err := net.Listen("unix", path)
		if err != nil {
			t.Errorf("fake sidecar: %v", err)
			return
		}
		_ = srv.Serve(lis)
	})
	t.Cleanup(func() {
		timer.Stop()
		srv.Stop()
	})
}

type testEnv struct {
	recv *ebpfReceiver
	sink *consumertest.MetricsSink
	host *statusHost
	logs *observer.ObservedLogs
}

func newTestReceiver(t *testing.T, socket string, mutate func(*Config)) *testEnv {
	t.Helper()
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Endpoint = "unix://" + socket
	cfg.Programs = []ProgramConfig{{Name: "syscalls"}}
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())
	set := receivertest.NewNopSettings(metadata.Type)
	core, logs := observer.New(zap.DebugLevel)
	set.Logger = zap.New(core)
	sink := new(consumertest.MetricsSink)
	r, err := newReceiver(set, cfg)
	require.NoError(t, err)
	r.nextMetrics = sink
	r.backoffMin = 10 * time.Millisecond
	r.backoffMax = 50 * time.Millisecond
	r.describeTimeout = time.Second
	return &testEnv{recv: r, sink: sink, host: newStatusHost(t), logs: logs}
}

// startErr starts the receiver as the collector's graph does: Starting
// before Start, then PermanentError if Start failed or OK if the receiver
// reported nothing else meanwhile.
func (e *testEnv) startErr(ctx context.Context, t *testing.T) error {
	t.Helper()
	e.host.reportByCollector(componentstatus.NewEvent(componentstatus.StatusStarting))
	if err := e.recv.Start(ctx, e.host); err != nil {
		e.host.reportByCollector(componentstatus.NewPermanentErrorEvent(err))
		return err
	}
	e.host.reportOKIfStarting()
	// The collector reports Stopping just before Shutdown. Here it comes
	// after Shutdown returns, or tests would race the stream loop's reports
	// in that gap; a report after Shutdown returned still fails the test
	// (nothing may follow Stopped).
	t.Cleanup(func() {
		assert.NoError(t, e.recv.Shutdown(context.Background()))
		e.host.reportByCollector(componentstatus.NewEvent(componentstatus.StatusStopping))
		e.host.reportByCollector(componentstatus.NewEvent(componentstatus.StatusStopped))
	})
	return nil
}

func (e *testEnv) start(t *testing.T) {
	t.Helper()
	require.NoError(t, e.startErr(context.Background(), t))
}

func socketPath(t *testing.T) string { return filepath.Join(t.TempDir(), "sidecar.sock") }

func testSnapshot(t *testing.T) *sidecarpb.Snapshot {
	return loadSnapshot(t, filepath.Join("testdata", "convert", "sum_resource_grouping", "snapshot.json"))
}

const waitFor, tick = 5 * time.Second, 5 * time.Millisecond

func TestReceiverDeliversSnapshots(t *testing.T) {
	sock := socketPath(t)
	fake := &fakeSidecar{snapshot: testSnapshot(t)}
	serve(t, sock, fake)
	env := newTestReceiver(t, sock, func(c *Config) {
		c.Programs[0].Parameters = map[string]string{"per_process": "true"}
		c.CollectionInterval = time.Second
	})
	env.start(t)

	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) >= 3 }, waitFor, tick)
	md := env.sink.AllMetrics()[0]
	assert.Equal(t, 4, md.DataPointCount())
	assert.Equal(t, 2, md.ResourceMetrics().Len())

	reqs := fake.streamRequests()
	require.Len(t, reqs, 1)
	assert.True(t, proto.Equal(&sidecarpb.StreamRequest{
		Programs:      []*sidecarpb.ProgramRequest{{Name: "syscalls", Parameters: map[string]string{"per_process": "true"}}},
		Maps:          []*sidecarpb.MapRequest{{Program: "syscalls", Map: "syscalls"}},
		Interval:      reqs[0].Interval,
		PackedColumns: true,
	}, reqs[0]))
	assert.Equal(t, time.Second, reqs[0].Interval.AsDuration())
	n, _ := env.host.count(componentstatus.StatusOK)
	assert.Equal(t, 1, n, "StatusOK once per stream")
	assert.Zero(t, env.logs.FilterMessageSnippet("sequence gap").Len())
}

func TestReceiverReconnectsAfterSidecarRestart(t *testing.T) {
	sock := socketPath(t)
	fake := &fakeSidecar{snapshot: testSnapshot(t)}
	stop := serve(t, sock, fake)
	env := newTestReceiver(t, sock, nil)
	env.start(t)
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)

	stop()
	require.Eventually(t, func() bool {
		return env.host.last() == componentstatus.StatusRecoverableError
	}, waitFor, tick, "losing the sidecar is a recoverable error")
	_, ev := env.host.count(componentstatus.StatusRecoverableError)
	assert.Error(t, ev.Err())
	assert.NotZero(t, env.logs.FilterMessageSnippet("reconnecting").Len())

	fake2 := &fakeSidecar{snapshot: testSnapshot(t)}
	serve(t, sock, fake2)
	before := len(env.sink.AllMetrics())
	require.Eventually(t, func() bool {
		return len(fake2.streamRequests()) == 1 && len(env.sink.AllMetrics()) > before+2
	}, waitFor, tick, "metrics flow again after the sidecar is back")
	require.Eventually(t, func() bool { return env.host.last() == componentstatus.StatusOK }, waitFor, tick)
}

func TestReceiverStartsWithoutSidecar(t *testing.T) {
	sock := socketPath(t)
	// startup_timeout 0: Start asks once and does not wait.
	env := newTestReceiver(t, sock, func(c *Config) { c.StartupTimeout = 0 })
	env.start(t) // must not fail: the sidecar may come up later
	n, ev := env.host.count(componentstatus.StatusRecoverableError)
	require.GreaterOrEqual(t, n, 1)
	assert.ErrorContains(t, ev.Err(), "is not reachable")
	assert.Equal(t, 1, env.logs.FilterMessageSnippet("not reachable yet").Len())

	serve(t, sock, &fakeSidecar{snapshot: testSnapshot(t)})
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)
}

func TestReceiverStartFailsOnConfigNotInCatalog(t *testing.T) {
	sock := socketPath(t)
	serve(t, sock, &fakeSidecar{snapshot: testSnapshot(t)})
	env := newTestReceiver(t, sock, func(c *Config) {
		c.Metrics = []MetricConfig{{Name: "ebpf.x", MapName: "nope", Type: MetricTypeSum}}
	})
	err := env.startErr(context.Background(), t)
	require.Error(t, err)
	assert.ErrorContains(t, err, "does not match the sidecar's catalog")
	assert.ErrorContains(t, err, `metrics[0].map_name: no catalog program has a map "nope"; valid maps (program/map): syscalls/syscalls`)
	assert.NoError(t, env.recv.Shutdown(context.Background()))
}

// A collector started before its sidecar (same pod, same boot) must still
// stop on a config that names a map the catalog lacks.
func TestReceiverStartWaitsForALateSidecarAndFailsOnBadConfig(t *testing.T) {
	sock := socketPath(t)
	const late = 300 * time.Millisecond
	serveAfter(t, sock, &fakeSidecar{snapshot: testSnapshot(t), catalog: realDescribe(t)}, late)
	env := newTestReceiver(t, sock, func(c *Config) {
		c.StartupTimeout = 10 * time.Second
		c.Programs = nil
		c.Metrics = []MetricConfig{{Name: "ebpf.x", MapName: "no_such_map_xyz", Type: MetricTypeSum}}
	})
	began := time.Now()
	err := env.startErr(context.Background(), t)
	waited := time.Since(began)
	require.Error(t, err, "a bad config must fail Start even when the sidecar comes up after the collector")
	assert.ErrorContains(t, err, `metrics[0].map_name: no catalog program has a map "no_such_map_xyz"; valid maps (program/map): block/disk_io, `)
	assert.ErrorContains(t, err, "syscalls/syscalls")
	assert.GreaterOrEqual(t, waited, late)
	assert.Less(t, waited, 5*time.Second, "the sidecar is seen soon after it starts listening")
	assert.NoError(t, env.recv.Shutdown(context.Background()))
}

func TestReceiverStartWaitsForALateSidecar(t *testing.T) {
	sock := socketPath(t)
	serveAfter(t, sock, &fakeSidecar{snapshot: testSnapshot(t)}, 300*time.Millisecond)
	env := newTestReceiver(t, sock, func(c *Config) { c.StartupTimeout = 10 * time.Second })
	env.start(t)
	n, _ := env.host.count(componentstatus.StatusRecoverableError)
	assert.Zero(t, n, "a sidecar that comes up within startup_timeout is no error")
	assert.Zero(t, env.logs.FilterMessageSnippet("not reachable yet").Len())
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)
}

func TestReceiverStartGivesUpAfterStartupTimeout(t *testing.T) {
	sock := socketPath(t)
	const bound = 200 * time.Millisecond
	env := newTestReceiver(t, sock, func(c *Config) { c.StartupTimeout = bound })
	began := time.Now()
	env.start(t) // must not fail: the sidecar may come up later
	assert.GreaterOrEqual(t, time.Since(began), bound)
	n, ev := env.host.count(componentstatus.StatusRecoverableError)
	require.Equal(t, 1, n)
	assert.ErrorContains(t, ev.Err(), "is not reachable")
	logged := env.logs.FilterMessageSnippet("not reachable yet").All()
	require.Len(t, logged, 1)
	assert.Equal(t, bound, logged[0].ContextMap()["startup_timeout"])

	serve(t, sock, &fakeSidecar{snapshot: testSnapshot(t)})
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)
	require.Eventually(t, func() bool { return env.host.last() == componentstatus.StatusOK }, waitFor, tick)
}

func TestReceiverStartReturnsWhenItsContextIsDone(t *testing.T) {
	env := newTestReceiver(t, socketPath(t), func(c *Config) { c.StartupTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := env.startErr(ctx, t)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "start was cancelled while waiting for the eBPF sidecar")
	assert.Less(t, time.Since(began), 5*time.Second)
	assert.NoError(t, env.recv.Shutdown(context.Background()))
}

func TestReceiverSidecarRejectsRequest(t *testing.T) {
	sock := socketPath(t)
	fake := &fakeSidecar{streamErr: status.Error(codes.InvalidArgument,
		`programs[0].parameters.per_process: "maybe" is not a bool; valid: true, false`)}
	serve(t, sock, fake)
	env := newTestReceiver(t, sock, nil)
	env.start(t)
	// Recoverable, not permanent: the receiver retries, and the collector
	// has no way out of PermanentError.
	require.Eventually(t, func() bool {
		n, _ := env.host.count(componentstatus.StatusRecoverableError)
		return n > 0
	}, waitFor, tick)
	_, ev := env.host.count(componentstatus.StatusRecoverableError)
	assert.ErrorContains(t, ev.Err(), `"maybe" is not a bool`)
	logged := env.logs.FilterMessageSnippet("rejected the request").All()
	require.NotEmpty(t, logged)
	assert.Contains(t, logged[0].ContextMap()["error"], `"maybe" is not a bool`)
	// It keeps retrying at the maximum backoff (the sidecar may be upgraded).
	require.Eventually(t, func() bool { return len(fake.streamRequests()) >= 2 }, waitFor, tick)
}

// The sidecar rejects the request (a program that does not compile on this
// kernel), then is fixed: the status must come back to OK, which the
// collector allows only from RecoverableError.
func TestReceiverRecoversAfterSidecarRejection(t *testing.T) {
	sock := socketPath(t)
	fake := &fakeSidecar{snapshot: testSnapshot(t)}
	fake.setStreamErr(status.Error(codes.FailedPrecondition, "syscalls: the program does not compile: no kernel headers"))
	serve(t, sock, fake)
	env := newTestReceiver(t, sock, nil)
	env.start(t)
	require.Eventually(t, func() bool { return len(fake.streamRequests()) >= 2 }, waitFor, tick, "rejections are retried")
	assert.Equal(t, componentstatus.StatusRecoverableError, env.host.last())

	fake.setStreamErr(nil)
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)
	require.Eventually(t, func() bool { return env.host.last() == componentstatus.StatusOK }, waitFor, tick)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, env.host.statuses())
}

// A sidecar that comes up after Start gave up waiting, with a catalog the
// config does not match (an older sidecar), then is upgraded.
func TestReceiverRecoversWhenTheCatalogCatchesUp(t *testing.T) {
	sock := socketPath(t)
	env := newTestReceiver(t, sock, func(c *Config) { c.StartupTimeout = 0 })
	env.start(t)
	old := testDescribe()
	old.Programs = old.Programs[1:] // no "syscalls"
	fake := &fakeSidecar{snapshot: testSnapshot(t), catalog: old}
	serve(t, sock, fake)
	require.Eventually(t, func() bool {
		return env.logs.FilterMessageSnippet("rejected the request").Len() > 0
	}, waitFor, tick)
	_, ev := env.host.count(componentstatus.StatusRecoverableError)
	assert.ErrorContains(t, ev.Err(), "does not match the sidecar's catalog")
	assert.ErrorContains(t, ev.Err(), `programs[0].name: unknown program "syscalls"`)

	fake.setCatalog(testDescribe())
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) > 0 }, waitFor, tick)
	require.Eventually(t, func() bool { return env.host.last() == componentstatus.StatusOK }, waitFor, tick)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, env.host.statuses())
}

// Once Shutdown has begun the collector reports Stopping and Stopped, and
// no other status may follow.
func TestReceiverReportsNoStatusAfterShutdown(t *testing.T) {
	sock := socketPath(t)
	serve(t, sock, &fakeSidecar{snapshot: testSnapshot(t)})
	env := newTestReceiver(t, sock, nil)
	env.start(t)
	require.NoError(t, env.recv.Shutdown(context.Background()))
	before := len(env.host.statuses())
	env.recv.reportStatus(env.host, componentstatus.NewRecoverableErrorEvent(assert.AnError))
	assert.Len(t, env.host.statuses(), before)
}

func TestReceiverLogsSequenceGaps(t *testing.T) {
	sock := socketPath(t)
	serve(t, sock, &fakeSidecar{snapshot: testSnapshot(t), seqs: []uint64{1, 2, 5}})
	env := newTestReceiver(t, sock, nil)
	env.start(t)
	require.Eventually(t, func() bool { return len(env.sink.AllMetrics()) == 3 }, waitFor, tick)
	require.Eventually(t, func() bool { return env.logs.FilterMessageSnippet("sequence gap").Len() == 1 }, waitFor, tick)
	gap := env.logs.FilterMessageSnippet("sequence gap").All()[0].ContextMap()
	assert.Equal(t, uint64(3), gap["expected"])
	assert.Equal(t, uint64(5), gap["got"])
}

func TestShutdownWithoutStart(t *testing.T) {
	env := newTestReceiver(t, socketPath(t), nil)
	assert.NoError(t, env.recv.Shutdown(context.Background()))
}

// A snapshot over max_snapshot_size_mib (gRPC's default client limit was
// 4 MiB) is refused with an error naming the key to raise, and the stream
// is retried at the longest backoff instead of in a tight loop; raising
// the limit delivers it.
func TestReceiverOversizeSnapshotIsAClearSlowRetry(t *testing.T) {
	big := proto.Clone(testSnapshot(t)).(*sidecarpb.Snapshot)
	big.Maps[0].Error = strings.Repeat("x", 3<<20) // a 3 MiB snapshot
	for _, limit := range []int{1, 8} {
		t.Run(fmt.Sprintf("limit %d MiB", limit), func(t *testing.T) {
			sock := socketPath(t)
			fake := &fakeSidecar{snapshot: big}
			serve(t, sock, fake)
			env := newTestReceiver(t, sock, func(c *Config) { c.MaxSnapshotSizeMiB = limit })
			env.recv.backoffMax = 300 * time.Millisecond
			env.start(t)
			if limit > 3 {
				require.Eventually(t, func() bool { return env.host.last() == componentstatus.StatusOK }, waitFor, tick)
				return
			}
			require.Eventually(t, func() bool {
				n, _ := env.host.count(componentstatus.StatusRecoverableError)
				return n > 0
			}, waitFor, tick)
			_, ev := env.host.count(componentstatus.StatusRecoverableError)
			assert.ErrorContains(t, ev.Err(), "a snapshot is larger than max_snapshot_size_mib (1 MiB); raise max_snapshot_size_mib")
			time.Sleep(time.Second)
			fake.mu.Lock()
			streams := len(fake.requests)
			fake.mu.Unlock()
			// one attempt per longest backoff (300 ms), not one per 10 ms
			assert.LessOrEqual(t, streams, 5, "the oversize stream was retried in a tight loop")
		})
	}
}

// A next consumer slower than the stall timeout is backpressure, not a
// silent sidecar: the stream stays open and nothing is re-attached.
func TestReceiverSlowConsumerIsNotAStalledSidecar(t *testing.T) {
	sock := socketPath(t)
	fake := &fakeSidecar{snapshot: testSnapshot(t)}
	serve(t, sock, fake)
	env := newTestReceiver(t, sock, func(c *Config) { c.CollectionInterval = 100 * time.Millisecond })
	env.recv.minStall = 200 * time.Millisecond
	var calls atomic.Int32
	env.recv.nextMetrics = consumerFunc(func(ctx context.Context, md pmetric.Metrics) error {
		if calls.Add(1) == 1 {
			time.Sleep(time.Second) // five stall timeouts in one ConsumeMetrics
		}
		return env.sink.ConsumeMetrics(ctx, md)
	})
	env.start(t)
	require.Eventually(t, func() bool { return calls.Load() >= 3 }, waitFor, tick)
	assert.Zero(t, env.logs.FilterMessageSnippet("Lost the eBPF sidecar stream").Len(), "the stream was given up during a slow ConsumeMetrics")
	fake.mu.Lock()
	defer fake.mu.Unlock()
	assert.Len(t, fake.requests, 1, "the stream was re-opened")
}

type consumerFunc func(context.Context, pmetric.Metrics) error

func (f consumerFunc) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	return f(ctx, md)
}
func (consumerFunc) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pprofile"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

const (
	transport         = "grpc"
	dataFormat        = "protobuf"
	defaultBackoffMin = time.Second
	defaultBackoffMax = 30 * time.Second
	// defaultDescribeTimeout bounds each Describe call of the stream loop,
	// including the wait for the connection, and the one Describe of Start
	// when startup_timeout is 0.
	defaultDescribeTimeout = 5 * time.Second
	// maxRedialInterval caps gRPC's wait between connection attempts
	// (120 s by default), so that a sidecar coming up while Start waits is
	// seen within seconds rather than after startup_timeout.
	maxRedialInterval = 5 * time.Second
	// minConnectTimeout is gRPC's default, which WithConnectParams would
	// otherwise set to 0.
	minConnectTimeout = 20 * time.Second
)

// ebpfReceiver dials the sidecar, streams snapshots and pushes them to the
// next consumers. It never starts the sidecar.
type ebpfReceiver struct {
	cfg      *Config
	settings receiver.Settings
	// The next consumer of each pipeline the receiver is in; nil for a
	// signal it is not in. Set by the create calls (shared.go), before Start.
	nextMetrics  consumer.Metrics
	nextLogs     consumer.Logs
	nextProfiles xconsumer.Profiles
	obsrecv      *receiverhelper.ObsReport
	tel          *selfTelemetry

	backoffMin      time.Duration
	backoffMax      time.Duration
	describeTimeout time.Duration
	minStall        time.Duration

	mu     sync.Mutex // guards conn, cancel, done, stopping against Start/Shutdown races
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
	// stopping is set by Shutdown: from then on the receiver reports no
	// status, since the collector moves it to Stopping and Stopped and no
	// other status may follow those.
	stopping bool
}

func newReceiver(set receiver.Settings, cfg *Config) (*ebpfReceiver, error) {
	obsrecv, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID:             set.ID,
		Transport:              transport,
		LongLivedCtx:           true,
		ReceiverCreateSettings: set,
	})
	if err != nil {
		return nil, err
	}
	tel, err := newSelfTelemetry(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	return &ebpfReceiver{
		cfg:             cfg,
		settings:        set,
		obsrecv:         obsrecv,
		tel:             tel,
		backoffMin:      defaultBackoffMin,
		backoffMax:      defaultBackoffMax,
		describeTimeout: defaultDescribeTimeout,
		minStall:        defaultMinStallTimeout,
	}, nil
}

// configError is a config that does not match the sidecar's catalog.
type configError struct{ err error }

func (e *configError) Error() string {
	return "the ebpf receiver's configuration does not match the sidecar's catalog: " + e.err.Error()
}
func (e *configError) Unwrap() error { return e.err }

// Start dials the sidecar and waits, up to startup_timeout, for its
// catalog: a config that does not match it fails Start, so the collector
// stops with a message naming the field, whether the sidecar or the
// collector started first. A sidecar still unreachable after the wait is a
// recoverable status, and the stream loop keeps trying in the background.
func (r *ebpfReceiver) Start(ctx context.Context, host component.Host) error {
	conn, err := r.cfg.ToClientConn(ctx, host.GetExtensions(), r.settings.TelemetrySettings,
		configgrpc.WithGrpcDialOption(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  r.backoffMin,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   maxRedialInterval,
			},
			MinConnectTimeout: minConnectTimeout,
		})),
		configgrpc.WithGrpcDialOption(grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(r.cfg.MaxSnapshotSizeMiB<<20))))
	if err != nil {
		return fmt.Errorf("ebpf receiver: cannot create a gRPC client for endpoint %q: %w", r.cfg.Endpoint, err)
	}
	client := sidecarpb.NewSidecarClient(conn)
	if len(r.cfg.Events) > 0 && r.nextLogs == nil {
		r.settings.Logger.Warn("events are configured but the receiver is in no logs pipeline: they are checked, not requested; add the receiver to a logs pipeline to get them")
	}

	// startup_timeout 0: ask once, and do not wait for a sidecar that is not
	// listening yet (gRPC fails fast once the first connection attempt has
	// failed).
	timeout, callOpts := r.describeTimeout, []grpc.CallOption(nil)
	if r.cfg.StartupTimeout > 0 {
		timeout, callOpts = r.cfg.StartupTimeout, []grpc.CallOption{grpc.WaitForReady(true)}
		// Say why the collector is not ready yet while the sidecar starts.
		r.settings.Logger.Info("Waiting for the eBPF sidecar to check the configuration against its catalog",
			zap.String("endpoint", r.cfg.Endpoint), zap.Duration("startup_timeout", r.cfg.StartupTimeout))
	}
	first, err := r.describe(ctx, client, timeout, callOpts...)
	var mismatch *configError
	switch {
	case err == nil:
	case errors.As(err, &mismatch):
		_ = conn.Close()
		return err
	case ctx.Err() != nil:
		_ = conn.Close()
		return fmt.Errorf("ebpf receiver: start was cancelled while waiting for the eBPF sidecar at %s: %w", r.cfg.Endpoint, ctx.Err())
	default:
		r.settings.Logger.Warn("eBPF sidecar is not reachable yet; the receiver keeps trying in the background",
			zap.String("endpoint", r.cfg.Endpoint), zap.Duration("startup_timeout", r.cfg.StartupTimeout), zap.Error(err))
		r.reportStatus(host, componentstatus.NewRecoverableErrorEvent(
			fmt.Errorf("eBPF sidecar is not reachable: %w", err)))
	}

	loopCtx, loopCancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.mu.Lock()
	r.conn, r.cancel, r.done = conn, loopCancel, done
	r.mu.Unlock()
	go r.run(loopCtx, host, client, conn, first, done)
	return nil
}

// closedHint explains a connection the sidecar closed before its first
// word. gRPC reports only "error reading server preface", but on TCP that
// is how a sidecar serving mutual TLS refuses a client: with TLS 1.3 the
// server checks the client certificate after the client's handshake is
// done, and a plaintext client never gets a handshake at all.
func (r *ebpfReceiver) closedHint(err error) string {
	if !strings.Contains(err.Error(), "server preface") || strings.HasPrefix(r.cfg.Endpoint, "unix:") {
		return ""
	}
	tls := r.cfg.TLS
	switch {
	case tls.Insecure && tls.CAFile == "" && tls.CAPem == "":
		return "; the sidecar closed the connection, as one serving mutual TLS closes a plaintext one: set tls.ca_file, tls.cert_file and tls.key_file (a client certificate of its --tls-client-ca)"
	case tls.CertFile == "" && tls.CertPem == "":
		return "; the sidecar closed the connection after the TLS handshake, as it does without a client certificate: set tls.cert_file and tls.key_file to one of its --tls-client-ca"
	default:
		return "; the sidecar closed the connection after the TLS handshake, as it does with a client certificate it does not trust: use one issued by its --tls-client-ca"
	}
}

// describe asks the sidecar for its catalog, within timeout, and resolves
// the config against it. A config that does not match is a *configError.
func (r *ebpfReceiver) describe(ctx context.Context, client sidecarpb.SidecarClient, timeout time.Duration, opts ...grpc.CallOption) (*resolution, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	desc, err := client.Describe(dctx, &sidecarpb.DescribeRequest{}, opts...)
	if err != nil {
		return nil, fmt.Errorf("describe eBPF sidecar at %s: %w%s", r.cfg.Endpoint, err, r.closedHint(err))
	}
	r.logDescribe(desc)
	judge := func(req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		pctx, cancel := context.WithTimeout(ctx, r.describeTimeout)
		defer cancel()
		plan, err := client.Plan(pctx, req)
		if status.Code(err) == codes.Unimplemented {
			// The judge came with the sidecar of this receiver's version.
			return nil, &configError{fmt.Errorf("the eBPF sidecar at %s (version %s) cannot check a configuration (no Plan call); run the sidecar of this receiver's release: %w",
				r.cfg.Endpoint, desc.GetSidecarVersion(), err)}
		}
		if err != nil {
			return nil, &planError{fmt.Errorf("ask the eBPF sidecar at %s to check the configuration: %w", r.cfg.Endpoint, err)}
		}
		return plan, nil
	}
	res, err := resolveFor(r.cfg, desc, judge, r.nextLogs != nil)
	if err == nil {
		err = requestProfiles(r.cfg, desc, res.request, r.nextProfiles != nil, r.settings.Logger, judge)
	}
	var pe *planError
	var ce *configError
	switch {
	case errors.As(err, &pe), errors.As(err, &ce):
		return nil, err
	case err != nil:
		return nil, &configError{err}
	}
	return res, nil
}

// planError is a Plan call that failed: the sidecar went away or did not
// answer in time, which says nothing about the configuration.
type planError struct{ err error }

func (e *planError) Error() string { return e.err.Error() }
func (e *planError) Unwrap() error { return e.err }

// reportStatus reports ev unless Shutdown has begun.
func (r *ebpfReceiver) reportStatus(host component.Host, ev *componentstatus.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopping {
		componentstatus.ReportStatus(host, ev)
	}
}

// Shutdown stops the stream loop and closes the connection. It is safe to
// call without Start.
func (r *ebpfReceiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	conn, cancel, done := r.conn, r.cancel, r.done
	r.conn, r.cancel, r.done = nil, nil, nil
	r.stopping = true
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	var err error
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if conn != nil {
		err = errors.Join(err, conn.Close())
	}
	return err
}

func (r *ebpfReceiver) logDescribe(desc *sidecarpb.DescribeResponse) {
	names := make([]string, 0, len(desc.GetPrograms()))
	for _, p := range desc.GetPrograms() {
		names = append(names, p.GetName())
	}
	r.settings.Logger.Info("Connected to the eBPF sidecar",
		zap.String("endpoint", r.cfg.Endpoint),
		zap.String("sidecar_version", desc.GetSidecarVersion()),
		zap.String("protocol_version", desc.GetProtocolVersion()),
		zap.String("kernel", desc.GetKernel().GetRelease()),
		zap.Strings("programs", names))
}

// run is the stream loop: Describe, resolve, Stream, convert, consume;
// on error report status, back off and retry until ctx is done.
func (r *ebpfReceiver) run(ctx context.Context, host component.Host, client sidecarpb.SidecarClient, conn *grpc.ClientConn, first *resolution, done chan struct{}) {
	defer close(done)
	defer func() {
		// Never take the collector down. Nothing retries after this, so it
		// is the one permanent error.
		if p := recover(); p != nil {
			r.settings.Logger.Error("ebpf receiver stream loop panicked; no more metrics from this receiver", zap.Any("panic", p))
			r.reportStatus(host, componentstatus.NewPermanentErrorEvent(fmt.Errorf("stream loop panicked: %v", p)))
		}
	}()
	delay := r.backoffMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Let the channel redial now rather than on gRPC's own schedule.
			conn.ResetConnectBackoff()
		}
		delivered, err := r.session(ctx, host, client, first)
		first = nil
		if ctx.Err() != nil {
			return
		}
		if delivered {
			delay = r.backoffMin
		}
		// Every error here is retried, so every one is recoverable: the
		// collector's status has no way out of PermanentError, and a
		// rejected request does succeed once the sidecar is upgraded or
		// its catalog fixed.
		var wait time.Duration
		if isRejection(err) {
			wait = r.backoffMax
			r.settings.Logger.Error("eBPF sidecar rejected the request; fix the configuration or the sidecar, retrying",
				zap.String("endpoint", r.cfg.Endpoint), zap.Error(err), zap.Duration("retry_in", wait))
		} else {
			wait = jitter(delay)
			delay = min(2*delay, r.backoffMax)
			r.settings.Logger.Warn("Lost the eBPF sidecar stream; reconnecting",
				zap.String("endpoint", r.cfg.Endpoint), zap.Error(err), zap.Duration("retry_in", wait))
		}
		r.reportStatus(host, componentstatus.NewRecoverableErrorEvent(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jitter spreads d over [0.75d, 1.25d).
func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(rand.Int64N(int64(d)/2+1))
}

// oversizeError is a snapshot larger than max_snapshot_size_mib: retrying
// soon gets the same snapshot again, and every re-opened stream re-attaches.
type oversizeError struct {
	limitMiB int
	err      error
}

func (e *oversizeError) Error() string {
	return fmt.Sprintf("a snapshot is larger than max_snapshot_size_mib (%d MiB); raise max_snapshot_size_mib, "+
		"or make the largest map smaller (a program's max_* parameter, e.g. max_processes): %v", e.limitMiB, e.err)
}
func (e *oversizeError) Unwrap() error { return e.err }

// isRejection tells errors that retrying soon cannot fix, only a change to
// the sidecar or the config: the sidecar rejected the request or is out of
// a resource (stream slots, program instances), the config does not match
// its catalog, or a snapshot exceeds max_snapshot_size_mib. They are
// retried at the longest backoff, never in a tight loop.
func isRejection(err error) bool {
	var ce *configError
	var oe *oversizeError
	if errors.As(err, &ce) || errors.As(err, &oe) {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted:
		return true
	}
	return false
}

// firstSnapshotTimeout bounds the wait for a stream's first snapshot, on top
// of one interval: the sidecar compiles and attaches programs first.
const firstSnapshotTimeout = 60 * time.Second

// defaultMinStallTimeout is the shortest wait for the next snapshot before
// the stream is given up, whatever the interval.
const defaultMinStallTimeout = 5 * time.Second

// stallTimeout is how long the receiver waits for the next snapshot before
// it gives the stream up: three intervals, and never less than minStall.
func (r *ebpfReceiver) stallTimeout(interval time.Duration) time.Duration {
	return max(3*interval, r.minStall)
}

// session runs one Describe+Stream. It returns whether at least one snapshot
// was delivered, and why it ended.
func (r *ebpfReceiver) session(ctx context.Context, host component.Host, client sidecarpb.SidecarClient, res *resolution) (bool, error) {
	if res == nil {
		var err error
		if res, err = r.describe(ctx, client, r.describeTimeout, grpc.WaitForReady(true)); err != nil {
			return false, err
		}
	}
	conv := newConverter(res.bindings, r.settings.BuildInfo.Version, r.settings.Logger, r.tel)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A sidecar that keeps the stream open but stops sending (hung, or
	// stopped with SIGSTOP) would otherwise be a silent gap: the stream is
	// dropped and re-opened when no snapshot comes in time. The first one
	// may wait for programs to compile.
	var stalled atomic.Bool
	interval := r.cfg.CollectionInterval
	watchdog := time.AfterFunc(firstSnapshotTimeout+interval, func() {
		stalled.Store(true)
		cancel()
	})
	defer watchdog.Stop()
	stream, err := client.Stream(sctx, res.request)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	delivered := false
	var last uint64
	streamID := streams.Add(1)
	for {
		snap, err := stream.Recv()
		if err != nil {
			if stalled.Load() {
				err = fmt.Errorf("no snapshot within %s of the last one; re-opening the stream", r.stallTimeout(interval))
			} else if errors.Is(err, io.EOF) {
				err = errors.New("the sidecar ended the stream")
			} else if status.Code(err) == codes.ResourceExhausted {
				err = &oversizeError{limitMiB: r.cfg.MaxSnapshotSizeMiB, err: err}
			}
			return delivered, fmt.Errorf("stream from eBPF sidecar at %s: %w", r.cfg.Endpoint, err)
		}
		// The sidecar's silence is measured while the receiver waits for it,
		// not while a slow next consumer holds a snapshot: that is
		// backpressure, and the stream must not be torn down for it.
		watchdog.Stop()
		if last != 0 && snap.GetSequence() != 0 && snap.GetSequence() != last+1 {
			r.settings.Logger.Warn("Snapshot sequence gap: snapshots were lost between the sidecar and the receiver",
				zap.Uint64("expected", last+1), zap.Uint64("got", snap.GetSequence()))
		}
		if snap.GetSequence() != 0 {
			last = snap.GetSequence()
		}
		if len(res.request.GetEvents()) > 0 {
			for event, n := range r.tel.eventCounters(snap, streamID) {
				r.settings.Logger.Warn("Kernel events were not sent as log records (see otelcol_receiver_ebpf_dropped_events for why)",
					zap.String("event", event), zap.Uint64("dropped", n))
			}
		}
		if snap.GetSequence() != 0 {
			r.tel.cost.record(snap)
		}
		r.consumeSnapshot(ctx, conv, snap)
		if !delivered {
			delivered = true
			r.reportStatus(host, componentstatus.NewEvent(componentstatus.StatusOK))
		}
		watchdog.Reset(r.stallTimeout(interval))
	}
}

// consumeSnapshot hands one stream message on: its maps as metrics, its
// kernel events as logs and its stacks as profiles, each to the pipeline
// the receiver is in. A consumer's refusal is the consumer's to report; the
// stream goes on.
func (r *ebpfReceiver) consumeSnapshot(ctx context.Context, conv *converter, snap *sidecarpb.Snapshot) {
	if r.nextMetrics != nil && len(snap.GetMaps()) > 0 {
		md := conv.convert(snap)
		if n := md.DataPointCount(); n > 0 {
			octx := r.obsrecv.StartMetricsOp(ctx)
			err := r.nextMetrics.ConsumeMetrics(octx, md)
			r.obsrecv.EndMetricsOp(octx, dataFormat, n, err)
			r.logRefusal("metrics", snap, err)
		}
	}
	if r.nextLogs != nil && len(snap.GetLogs()) > 0 {
		ld, err := logsUnmarshaler.UnmarshalLogs(snap.GetLogs())
		if err != nil {
			r.settings.Logger.Error("The sidecar sent log records that are not OTLP; dropped them",
				zap.Int("bytes", len(snap.GetLogs())), zap.Error(err))
		} else if n := ld.LogRecordCount(); n > 0 {
			octx := r.obsrecv.StartLogsOp(ctx)
			err := r.nextLogs.ConsumeLogs(octx, ld)
			r.obsrecv.EndLogsOp(octx, dataFormat, n, err)
			r.logRefusal("logs", snap, err)
		}
	}
	if r.nextProfiles != nil && len(snap.GetProfiles()) > 0 {
		pd, err := profilesUnmarshaler.UnmarshalProfiles(snap.GetProfiles())
		if err != nil {
			r.settings.Logger.Error("The sidecar sent profiles that are not OTLP; dropped them",
				zap.Int("bytes", len(snap.GetProfiles())), zap.Error(err))
		} else if n := pd.SampleCount(); n > 0 {
			octx := r.obsrecv.StartProfilesOp(ctx)
			err := r.nextProfiles.ConsumeProfiles(octx, pd)
			r.obsrecv.EndProfilesOp(octx, dataFormat, n, err)
			r.logRefusal("profiles", snap, err)
		}
	}
}

// streams numbers the receiver's streams: the sidecar's per-stream event
// counters start over with each.
var streams atomic.Uint64

var (
	logsUnmarshaler     plog.ProtoUnmarshaler
	profilesUnmarshaler pprofile.ProtoUnmarshaler
)

func (r *ebpfReceiver) logRefusal(signal string, snap *sidecarpb.Snapshot, err error) {
	if err != nil {
		r.settings.Logger.Debug("Next consumer refused data", zap.String("signal", signal),
			zap.Uint64("sequence", snap.GetSequence()), zap.Error(err))
	}
}

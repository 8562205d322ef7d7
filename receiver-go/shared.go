package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/xreceiver"
)

// One receiver instance per config serves every pipeline it is named in:
// the collector creates it once per signal (metrics, logs, profiles), but
// all of them must share one sidecar stream, so that one set of programs is
// loaded and a kill event and the counters it moved come from the same
// programs. The collector's own sharedcomponent package is internal, hence
// this small copy of its idea: instances are keyed by the config pointer,
// which the collector passes unchanged to each create call of one
// component ID.
var receivers = struct {
	sync.Mutex
	byConfig map[*Config]*sharedReceiver
}{byConfig: map[*Config]*sharedReceiver{}}

// sharedReceiver starts its receiver on the first Start and shuts it down
// on the first Shutdown (the collector starts and stops every signal's
// instance of a component together).
type sharedReceiver struct {
	*ebpfReceiver
	startOnce sync.Once
	startErr  error
	stopOnce  sync.Once
	stopErr   error
}

func (s *sharedReceiver) Start(ctx context.Context, host component.Host) error {
	s.startOnce.Do(func() { s.startErr = s.ebpfReceiver.Start(ctx, host) })
	return s.startErr
}

func (s *sharedReceiver) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		receivers.Lock()
		delete(receivers.byConfig, s.ebpfReceiver.cfg)
		receivers.Unlock()
		s.stopErr = s.ebpfReceiver.Shutdown(ctx)
	})
	return s.stopErr
}

// sharedFor returns the one receiver of cfg, creating it on first use, and
// lets attach record the caller's next consumer on it.
func sharedFor(set receiver.Settings, cfg *Config, attach func(*ebpfReceiver)) (*sharedReceiver, error) {
	receivers.Lock()
	defer receivers.Unlock()
	s, ok := receivers.byConfig[cfg]
	if !ok {
		r, err := newReceiver(set, cfg)
		if err != nil {
			return nil, err
		}
		s = &sharedReceiver{ebpfReceiver: r}
		receivers.byConfig[cfg] = s
	}
	attach(s.ebpfReceiver)
	return s, nil
}

func createMetricsReceiver(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	return sharedFor(set, cfg.(*Config), func(r *ebpfReceiver) { r.nextMetrics = next })
}

func createLogsReceiver(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Logs) (receiver.Logs, error) {
	return sharedFor(set, cfg.(*Config), func(r *ebpfReceiver) { r.nextLogs = next })
}

func createProfilesReceiver(_ context.Context, set receiver.Settings, cfg component.Config, next xconsumer.Profiles) (xreceiver.Profiles, error) {
	return sharedFor(set, cfg.(*Config), func(r *ebpfReceiver) { r.nextProfiles = next })
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/xreceiver"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
)

// NewFactory creates the factory of the `ebpf` receiver. It offers metrics,
// logs (kernel events) and profiles (CPU stacks); one instance per config
// serves all the pipelines it is named in (shared.go).
func NewFactory() receiver.Factory {
	return xreceiver.NewFactory(
		metadata.Type,
		createDefaultConfig,
		xreceiver.WithMetrics(createMetricsReceiver, metadata.MetricsStability),
		xreceiver.WithLogs(createLogsReceiver, metadata.LogsStability),
		xreceiver.WithProfiles(createProfilesReceiver, metadata.ProfilesStability),
	)
}

func createDefaultConfig() component.Config {
	client := configgrpc.NewDefaultClientConfig()
	client.Endpoint = defaultEndpoint
	// A unix socket: no TLS, and no keepalive pings (the kernel reports a dead
	// peer; periodic pings only risk a "too many pings" GOAWAY from the
	// sidecar). Both can be turned back on in YAML for a TCP endpoint.
	client.TLS.Insecure = true
	client.Keepalive = configoptional.None[configgrpc.KeepaliveClientConfig]()
	return &Config{
		ClientConfig:       client,
		CollectionInterval: defaultCollectionInterval,
		StartupTimeout:     defaultStartupTimeout,
		MaxSnapshotSizeMiB: defaultMaxSnapshotSizeMiB,
		CardinalityLimit:   defaultCardinalityLimit,
	}
}

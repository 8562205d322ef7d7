package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
)

// NewFactory creates the factory of the `ebpf` receiver.
func NewFactory() receiver.Factory {
	return receiver.NewFactory(
		metadata.Type,
		createDefaultConfig,
		receiver.WithMetrics(createMetricsReceiver, metadata.MetricsStability),
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

func createMetricsReceiver(
	_ context.Context,
	set receiver.Settings,
	cfg component.Config,
	next consumer.Metrics,
) (receiver.Metrics, error) {
	return newReceiver(set, cfg.(*Config), next)
}

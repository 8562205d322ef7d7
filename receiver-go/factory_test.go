package ebpfreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
)

func TestFactory(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, metadata.Type, f.Type())
	assert.Equal(t, component.StabilityLevelDevelopment, f.MetricsStability())
	cfg := f.CreateDefaultConfig().(*Config)
	cfg.Programs = []ProgramConfig{{Name: "syscalls"}}
	r, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	assert.NoError(t, r.Shutdown(context.Background()))
}

func TestCreateDefaultConfig(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	assert.NoError(t, componenttest.CheckConfigStruct(cfg))
	assert.Equal(t, "unix:///run/ebpf-sidecar/sidecar.sock", cfg.Endpoint)
	assert.True(t, cfg.TLS.Insecure)
	assert.False(t, cfg.Keepalive.HasValue())
	assert.Equal(t, 10*time.Second, cfg.CollectionInterval)
	assert.Equal(t, 30*time.Second, cfg.StartupTimeout)
	assert.Equal(t, 2000, cfg.CardinalityLimit)
	// The default config names nothing to load, so it does not validate on
	// its own: the user must say what to collect.
	assert.ErrorContains(t, cfg.Validate(), "programs, metrics: both are empty")
}

package ebpfreceiver

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	minimal := createDefaultConfig().(*Config)
	minimal.Programs = []ProgramConfig{{Name: "syscalls"}}

	custom := createDefaultConfig().(*Config)
	custom.Endpoint = "unix:///var/run/sidecar/custom.sock"
	custom.CollectionInterval = 5 * time.Second
	custom.StartupTimeout = 2 * time.Minute
	custom.Programs = []ProgramConfig{
		{Name: "syscalls", Parameters: map[string]string{"per_process": "true"}},
		{Name: "runqlat"},
	}
	custom.Metrics = []MetricConfig{
		{
			Name:        "ebpf.syscalls",
			MapName:     "syscalls",
			Program:     "syscalls",
			Type:        MetricTypeSum,
			Unit:        "{syscall}",
			Description: "Syscalls by process and syscall name.",
			ValueField:  "count",
			Attributes: []AttributeConfig{
				{Field: "comm", Name: "process.executable.name", Resource: true},
				{Field: "syscall", Name: "system.syscall.name"},
			},
			CardinalityLimit: intp(100),
			Temporality:      TemporalityDelta,
			PerCPU:           true,
		},
		{
			Name: "ebpf.sched.runqueue.latency", MapName: "runq_latency", Type: MetricTypeHistogram,
			HistogramFormat: HistogramFormatExponential, Unit: "ns",
		},
	}

	overrides := createDefaultConfig().(*Config)
	overrides.CardinalityLimit = 500
	overrides.Programs = []ProgramConfig{
		{Name: "syscalls", Metrics: map[string]MetricOverrideConfig{
			"ebpf.syscalls": {CardinalityLimit: intp(50), Temporality: TemporalityDelta, PerCPU: true},
		}},
		{Name: "runqlat", Metrics: map[string]MetricOverrideConfig{
			"ebpf.sched.runqueue.latency": {HistogramFormat: HistogramFormatExponential, Unit: "ns"},
		}},
	}

	tests := []struct {
		id       component.ID
		expected *Config
	}{
		{component.NewID(metadata.Type), minimal},
		{component.NewIDWithName(metadata.Type, "custom"), custom},
		{component.NewIDWithName(metadata.Type, "overrides"), overrides},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			require.NoError(t, confmap.Validate(cfg))
			assert.Equal(t, tt.expected, cfg)
		})
	}
}

func TestValidateErrors(t *testing.T) {
	good := func() *Config {
		cfg := createDefaultConfig().(*Config)
		cfg.Programs = []ProgramConfig{{Name: "syscalls"}}
		cfg.Metrics = []MetricConfig{{Name: "ebpf.syscalls", MapName: "syscalls", Type: MetricTypeSum}}
		return cfg
	}
	require.NoError(t, good().Validate())

	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{
			name:   "empty endpoint",
			mutate: func(c *Config) { c.Endpoint = "" },
			want:   []string{"endpoint: must not be empty; set it to the sidecar's address, e.g. unix:///run/ebpf-sidecar/sidecar.sock"},
		},
		{
			name:   "tls on the unix socket",
			mutate: func(c *Config) { c.TLS.Insecure = false },
			want:   []string{"tls: the sidecar serves its unix socket unix:///run/ebpf-sidecar/sidecar.sock without TLS (the socket's mode guards it); remove tls, or set endpoint to the sidecar's host:port"},
		},
		{
			name: "a client certificate that would never be sent",
			mutate: func(c *Config) {
				c.Endpoint = "127.0.0.1:7700"
				c.TLS.CertFile, c.TLS.KeyFile = "client.pem", "client.key"
			},
			want: []string{"tls.cert_file: a client certificate is set but tls.insecure is true (this receiver's default) and no tls.ca_file, so the connection would be plaintext"},
		},
		{
			name:   "interval too short",
			mutate: func(c *Config) { c.CollectionInterval = 50 * time.Millisecond },
			want:   []string{"collection_interval: 50ms is below the minimum of 100ms; set it to 100ms or more"},
		},
		{
			name:   "negative startup_timeout",
			mutate: func(c *Config) { c.StartupTimeout = -time.Second },
			want:   []string{"startup_timeout: -1s is negative; set it to how long start waits for the sidecar, or 0 not to wait (default 30s)"},
		},
		{
			name:   "nothing to collect",
			mutate: func(c *Config) { c.Programs, c.Metrics = nil, nil },
			want:   []string{"programs, metrics: both are empty; list catalog programs under programs"},
		},
		{
			name:   "empty program name",
			mutate: func(c *Config) { c.Programs = append(c.Programs, ProgramConfig{}) },
			want:   []string{"programs[1].name: must not be empty; set it to a catalog program"},
		},
		{
			name:   "duplicate program",
			mutate: func(c *Config) { c.Programs = append(c.Programs, ProgramConfig{Name: "syscalls"}) },
			want:   []string{`programs[1].name: "syscalls" is already listed as programs[0]; list each program once`},
		},
		{
			name:   "empty metric name and map",
			mutate: func(c *Config) { c.Metrics = append(c.Metrics, MetricConfig{Type: MetricTypeGauge}) },
			want: []string{
				"metrics[1].name: must not be empty; set it to the metric name to emit",
				"metrics[1].map_name: must not be empty; set it to the BPF map the metric is read from",
			},
		},
		{
			name: "value_attribute with value_field and no fields",
			mutate: func(c *Config) {
				c.Metrics = append(c.Metrics, MetricConfig{
					Name: "ebpf.switches", MapName: "switches", Type: MetricTypeSum, ValueField: "voluntary",
					ValueAttribute: &ValueAttributeConfig{},
				})
			},
			want: []string{
				"metrics[1].value_attribute: cannot be combined with metrics[1].value_field; keep one of them",
				"metrics[1].value_attribute.name: must not be empty",
				"metrics[1].value_attribute.fields: must list at least one {field, value}",
			},
		},
		{
			name: "value_attribute on a histogram, half a field",
			mutate: func(c *Config) {
				c.Metrics = append(c.Metrics, MetricConfig{
					Name: "ebpf.h", MapName: "h", Type: MetricTypeHistogram,
					ValueAttribute: &ValueAttributeConfig{Name: "t", Fields: []ValueFieldConfig{{Field: "a"}}},
				})
			},
			want: []string{
				"metrics[1].value_attribute: does not apply to histograms; remove it or set type to sum or gauge",
				"metrics[1].value_attribute.fields[0]: field and value must both be set",
			},
		},
		{
			name: "duplicate metric name",
			mutate: func(c *Config) {
				c.Metrics = append(c.Metrics, MetricConfig{Name: "ebpf.syscalls", MapName: "other", Type: MetricTypeSum})
			},
			want: []string{`metrics[1].name: "ebpf.syscalls" is already used by metrics[0]; metric names must be unique`},
		},
		{
			name: "bad type",
			mutate: func(c *Config) {
				c.Metrics = append(c.Metrics, MetricConfig{Name: "a", MapName: "m"}, MetricConfig{Name: "b", MapName: "m", Type: "histo"})
			},
			want: []string{
				"metrics[1].type: must not be empty; set it to one of sum, gauge, histogram",
				`metrics[2].type: "histo" is not one of sum, gauge, histogram`,
			},
		},
		{
			name: "bad attributes",
			mutate: func(c *Config) {
				c.Metrics[0].Attributes = []AttributeConfig{
					{Field: "pid", Name: "process.pid"},
					{Name: "x"},
					{Field: "comm"},
					{Field: "tgid", Name: "process.pid"},
				}
			},
			want: []string{
				`metrics[0].attributes[1].field: must not be empty; set it to a key field of map "syscalls"`,
				"metrics[0].attributes[2].name: must not be empty; set it to the attribute name",
				`metrics[0].attributes[3].name: "process.pid" is already used by metrics[0].attributes[0]; attribute names must be unique within a metric`,
			},
		},
	}
	tests = append(tests, []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{
			name:   "receiver cardinality_limit 0",
			mutate: func(c *Config) { c.CardinalityLimit = 0 },
			want:   []string{"cardinality_limit: 0 is not a number of series; set it to 1 or more (default 2000)"},
		},
		{
			name: "metric knobs",
			mutate: func(c *Config) {
				c.Metrics[0].CardinalityLimit = intp(0)
				c.Metrics[0].Temporality = "deltas"
				c.Metrics[0].HistogramFormat = "native"
				c.Metrics = append(c.Metrics, MetricConfig{Name: "g", MapName: "runnable", Type: MetricTypeGauge,
					Temporality: TemporalityDelta, HistogramFormat: HistogramFormatExponential})
			},
			want: []string{
				"metrics[0].cardinality_limit: 0 is not a number of series; set it to 1 or more, or remove it for the receiver's cardinality_limit",
				`metrics[0].temporality: "deltas" is not one of cumulative, delta`,
				`metrics[0].histogram_format: "native" is not one of explicit, exponential`,
				"metrics[1].temporality: delta applies to sums and histograms, not to a gauge; remove it",
				"metrics[1].histogram_format: applies to histograms only, and the type is gauge; remove it",
			},
		},
		{
			name: "program overrides while metrics are listed",
			mutate: func(c *Config) {
				c.Programs[0].Metrics = map[string]MetricOverrideConfig{"ebpf.syscalls": {CardinalityLimit: intp(3)}}
			},
			want: []string{"programs[0].metrics[ebpf.syscalls]: default metrics are not emitted because metrics lists the metrics to emit; set these keys on that metric under metrics instead"},
		},
		{
			name: "bad program override",
			mutate: func(c *Config) {
				c.Metrics = nil
				c.Programs[0].Metrics = map[string]MetricOverrideConfig{"ebpf.syscalls": {CardinalityLimit: intp(-1), Temporality: "now"}}
			},
			want: []string{
				"programs[0].metrics[ebpf.syscalls].cardinality_limit: -1 is not a number of series",
				`programs[0].metrics[ebpf.syscalls].temporality: "now" is not one of cumulative, delta`,
			},
		},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.mutate(cfg)
			err := cfg.Validate()
			require.Error(t, err)
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

// The receiver's floor for collection_interval, which `validate` checks
// without a sidecar, is the one the sidecar's judge applies (the fixture is
// generated from the sidecar's code).
func TestMinCollectionIntervalIsTheSidecars(t *testing.T) {
	assert.Equal(t, realDescribe(t).GetMinInterval().AsDuration(), minCollectionInterval)
}

// TestValidateAcceptsTheSidecarsTLSSetups: the unix socket without TLS (the
// default), loopback plaintext, and mutual TLS on TCP with the CA set (tls
// is used then although this receiver defaults tls.insecure to true).
func TestValidateAcceptsTheSidecarsTLSSetups(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"unix socket":  func(*Config) {},
		"loopback tcp": func(c *Config) { c.Endpoint = "127.0.0.1:7700" },
		"mutual tls": func(c *Config) {
			c.Endpoint = "sidecar.example:7700"
			c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile = "ca.pem", "client.pem", "client.key"
		},
		"mutual tls, insecure false": func(c *Config) {
			c.Endpoint = "sidecar.example:7700"
			c.TLS.Insecure = false
			c.TLS.CertFile, c.TLS.KeyFile = "client.pem", "client.key"
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			cfg.Programs = []ProgramConfig{{Name: "syscalls"}}
			mutate(cfg)
			require.NoError(t, cfg.Validate())
		})
	}
}

// TestClosedHintSaysWhichTLSSettingIsMissing: a sidecar serving mutual TLS
// refuses a client by closing the connection, which gRPC reports only as
// "error reading server preface"; the hint names the settings to set.
func TestClosedHintSaysWhichTLSSettingIsMissing(t *testing.T) {
	closed := errors.New(`rpc error: code = Unavailable desc = connection error: desc = "error reading server preface: EOF"`)
	for name, tc := range map[string]struct {
		mutate func(*Config)
		err    error
		want   string
	}{
		"unix socket":    {func(*Config) {}, closed, ""},
		"another error":  {func(c *Config) { c.Endpoint = "127.0.0.1:7700" }, errors.New("connection refused"), ""},
		"plaintext":      {func(c *Config) { c.Endpoint = "127.0.0.1:7700" }, closed, "set tls.ca_file, tls.cert_file and tls.key_file"},
		"no client cert": {func(c *Config) { c.Endpoint, c.TLS.CAFile = "127.0.0.1:7700", "ca.pem" }, closed, "set tls.cert_file and tls.key_file"},
		"untrusted client cert": {func(c *Config) {
			c.Endpoint = "127.0.0.1:7700"
			c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile = "ca.pem", "client.pem", "client.key"
		}, closed, "a client certificate it does not trust"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			tc.mutate(cfg)
			hint := (&ebpfReceiver{cfg: cfg}).closedHint(tc.err)
			if tc.want == "" {
				assert.Empty(t, hint)
			} else {
				assert.Contains(t, hint, tc.want)
			}
		})
	}
}

package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// Builders of configs, and a runner of resolution error cases, for the
// tests of resolution and binding.

func cfgWith(programs []ProgramConfig, metrics ...MetricConfig) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Programs = programs
	cfg.Metrics = metrics
	return cfg
}

func intp(i int) *int { return &i }

// resolveErrorCase is a config and the error resolving it against the
// fake catalog gives ("" for none).
type resolveErrorCase struct {
	name string
	cfg  *Config
	want string
}

// checkResolveErrors resolves every case against testDescribe().
func checkResolveErrors(t *testing.T, tests []resolveErrorCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolve(tt.cfg, testDescribe(), testJudge())
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.want)
		})
	}
}

package ebpfreceiver

// Builders of configs for the resolution tests.

func cfgWith(programs []ProgramConfig, metrics ...MetricConfig) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Programs = programs
	cfg.Metrics = metrics
	return cfg
}

func intp(i int) *int { return &i }

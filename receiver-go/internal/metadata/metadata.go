// Package metadata holds the component type, stability and instrumentation
// scope of the ebpf receiver.
//
// This file is hand-written: mdatagen is not available in this build
// environment, so it plays the role of mdatagen's generated_status.go. Keep it
// in sync with ../../metadata.yaml.
package metadata

import (
	"go.opentelemetry.io/collector/component"
)

var (
	// Type is the component type used in collector YAML (`receivers: ebpf:`).
	Type = component.MustNewType("ebpf")
	// ScopeName is the instrumentation scope of every metric the receiver emits.
	ScopeName = "github.com/ebpfreceiver/ebpfreceiver/receiver-go"
)

const (
	// MetricsStability is the stability of the metrics signal.
	MetricsStability = component.StabilityLevelDevelopment
)

// Package ebpfreceiver implements the `ebpf` receiver: a thin OpenTelemetry
// Collector receiver that dials the privileged eBPF sidecar over gRPC (a unix
// socket by default), asks it to load catalog programs and stream their maps,
// and turns every streamed snapshot into pmetric.Metrics for the next
// consumer. It never starts the sidecar and holds no BPF knowledge beyond the
// wire schema in proto/ebpfreceiver/sidecar/v1.
package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

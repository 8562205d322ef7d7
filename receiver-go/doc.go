// `go generate` and `make generate` run mdatagen on metadata.yaml through
// scripts/gen-metadata.sh, which gives it the package's name (mdatagen
// names root-level files' package after the folder, and "receiver-go" is
// no Go identifier). It writes internal/metadata, internal/metadatatest,
// generated_*_test.go and documentation.md.
//go:generate ../scripts/gen-metadata.sh

// Package ebpfreceiver implements the `ebpf` receiver: a thin OpenTelemetry
// Collector receiver that dials the privileged eBPF sidecar over gRPC (a unix
// socket by default), asks it to load catalog programs and stream their maps,
// and turns every streamed snapshot into pmetric.Metrics for the next
// consumer. It never starts the sidecar and holds no BPF knowledge beyond the
// wire schema in proto/ebpfreceiver/sidecar/v1.
package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

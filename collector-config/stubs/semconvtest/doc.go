// Package semconvtest is an empty stand-in, never compiled into otelcol-ebpf.
//
// Only k8sattributesprocessor's tests import the real module, but ocb runs
// `go mod tidy`, which resolves the imports of the tests of every package the
// collector imports, and the Go module proxy serves no semconvtest v0.165.1.
// The builder manifest replaces it with this folder (see
// ../otlpencodingextension). Remove the replace once the proxy serves it.
package semconvtest

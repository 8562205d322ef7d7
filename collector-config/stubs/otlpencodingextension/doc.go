// Package otlpencodingextension is an empty stand-in, never compiled into
// otelcol-ebpf.
//
// Only fileexporter's own tests (encoding_test.go) import the real module,
// but ocb runs `go mod tidy`, which resolves the imports of the tests of
// every package the collector imports, and the Go module proxy serves no
// otlpencodingextension v0.164.0..v0.165.1 ("403 This module version is not
// available"). The builder manifest replaces it with this folder so tidy
// finds the package; nothing in the collector imports it, so nothing of it
// is built. Remove the replace once the proxy serves the release.
package otlpencodingextension

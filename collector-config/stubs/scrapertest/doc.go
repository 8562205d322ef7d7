// Package scrapertest is an empty stand-in, never compiled into otelcol-ebpf.
//
// Only hostmetricsreceiver's scraper tests import the real module, but ocb
// runs `go mod tidy`, which resolves the imports of the tests of every package
// the collector imports, and the Go module proxy serves no scrapertest
// v0.165.0. The builder manifest replaces it with this folder (see
// ../otlpencodingextension). Remove the replace once the proxy serves it.
package scrapertest

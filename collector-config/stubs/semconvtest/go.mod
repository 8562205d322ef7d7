// An empty stand-in for a module the Go proxy does not serve (see doc.go).
module github.com/open-telemetry/opentelemetry-collector-contrib/pkg/semconvtest

go 1.25

// An empty stand-in for a module the Go proxy does not serve (see doc.go).
module go.opentelemetry.io/collector/scraper/scrapertest

go 1.25

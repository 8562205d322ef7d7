package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configgrpc"
)

const (
	// defaultEndpoint is where the sidecar listens unless told otherwise.
	defaultEndpoint = "unix:///run/ebpf-sidecar/sidecar.sock"
	// defaultCollectionInterval is how often the sidecar reads the maps.
	defaultCollectionInterval = 10 * time.Second
	// minCollectionInterval bounds the map-read rate the receiver may ask for.
	minCollectionInterval = 100 * time.Millisecond
	// defaultCardinalityLimit is how many series one metric may have before
	// new series are folded into its overflow series.
	defaultCardinalityLimit = 2000
	// defaultStartupTimeout is how long Start waits for the sidecar's
	// catalog: long enough for a sidecar started beside the collector (same
	// pod, same unit) to come up, short enough not to hold the collector.
	defaultStartupTimeout = 30 * time.Second
	// defaultMaxSnapshotSizeMiB bounds one snapshot the receiver accepts. A
	// snapshot costs about 130 bytes an entry (process_cpu-shaped maps): 64
	// MiB holds half a million processes, far above what a node runs, and
	// stays small next to the collector's memory limit.
	defaultMaxSnapshotSizeMiB = 64
)

// MetricType is how a map becomes a metric.
type MetricType string

const (
	// MetricTypeSum is a cumulative, monotonic sum (counters).
	MetricTypeSum MetricType = "sum"
	// MetricTypeGauge is a gauge (current values).
	MetricTypeGauge MetricType = "gauge"
	// MetricTypeHistogram is an explicit-bucket histogram from a log2 histogram map.
	MetricTypeHistogram MetricType = "histogram"
)

var validMetricTypes = []MetricType{MetricTypeSum, MetricTypeGauge, MetricTypeHistogram}

func (t MetricType) valid() bool {
	for _, v := range validMetricTypes {
		if t == v {
			return true
		}
	}
	return false
}

// Temporality is the aggregation temporality of a sum or histogram.
type Temporality string

const (
	// TemporalityCumulative reports totals since the program was attached
	// (the default).
	TemporalityCumulative Temporality = "cumulative"
	// TemporalityDelta reports what accumulated since the previous snapshot;
	// the sidecar clears the map on every read.
	TemporalityDelta Temporality = "delta"
)

// HistogramFormat is the OpenTelemetry histogram type a histogram map
// becomes.
type HistogramFormat string

const (
	// HistogramFormatExplicit is an explicit-bucket histogram (the default;
	// the Prometheus exporter shows it as a classic histogram).
	HistogramFormatExplicit HistogramFormat = "explicit"
	// HistogramFormatExponential is a base-2 exponential histogram at scale
	// 0; log2 slot conventions only.
	HistogramFormatExponential HistogramFormat = "exponential"
)

// Config is the configuration of the ebpf receiver.
type Config struct {
	// ClientConfig is how to reach the sidecar; endpoint defaults to its unix
	// socket and tls.insecure to true.
	configgrpc.ClientConfig `mapstructure:",squash"`

	// CollectionInterval is how often the sidecar reads the maps and sends a
	// snapshot. At least 100ms.
	CollectionInterval time.Duration `mapstructure:"collection_interval"`

	// Programs are the catalog programs to load, with their parameters. When
	// Metrics is empty, the default metrics of these programs are emitted.
	Programs []ProgramConfig `mapstructure:"programs"`

	// Metrics bind maps to metrics. When empty, the default metrics of
	// Programs are emitted.
	Metrics []MetricConfig `mapstructure:"metrics"`

	// StartupTimeout is how long Start waits for the sidecar to answer
	// Describe, so that a config that does not match its catalog stops the
	// collector even when the sidecar comes up after it. A sidecar still
	// unreachable then is a recoverable status and the receiver keeps
	// trying in the background. 0 asks once without waiting. Default 30s.
	StartupTimeout time.Duration `mapstructure:"startup_timeout"`

	// MaxSnapshotSizeMiB is the largest snapshot the receiver accepts, in
	// MiB (gRPC's client default of 4 MiB is too small for large maps). A
	// larger one is refused and the stream retried at the longest backoff
	// with an error saying which limit to raise. Default 64.
	MaxSnapshotSizeMiB int `mapstructure:"max_snapshot_size_mib"`

	// Events are the kernel events sent as log records when the receiver is
	// in a logs pipeline (one log record per event).
	Events []EventConfig `mapstructure:"events"`

	// CardinalityLimit is the default number of series one metric may have;
	// data points of further series are folded into one overflow series.
	// Metrics override it with their own cardinality_limit. Default 2000.
	CardinalityLimit int `mapstructure:"cardinality_limit"`

	// ChangesOnly asks the sidecar to send, after a map's first snapshot,
	// only the entries of cumulative maps that changed since the previous
	// one (and which went away); the receiver keeps each map whole and
	// exports exactly what whole snapshots give. The sidecar still sends
	// each map whole every 30 snapshots. Default false.
	ChangesOnly bool `mapstructure:"changes_only"`

	// ProfilesPerContainer makes the profiles pipeline get one profile per
	// container (pod) and interval instead of one per process. Only for a
	// receiver in a profiles pipeline.
	ProfilesPerContainer bool `mapstructure:"profiles_per_container"`

	// ProfilesFilter limits the profiles to these containers (id, or its
	// first 12 or more hex digits), pods (uid) or cgroup v2 paths (starting
	// with "/"); empty profiles the whole node. The sidecar checks the
	// entries. Only for a receiver in a profiles pipeline.
	ProfilesFilter []string `mapstructure:"profiles_filter"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// Severities an event may have, least severe first (OpenTelemetry's
// severity texts, lower case).
var severities = []string{"trace", "debug", "info", "warn", "error", "fatal"}

// maxEventRateLimit is the most events per second of one type the sidecar
// sends (its judge has the same bound).
const maxEventRateLimit = 100000

// EventConfig asks for kernel events of one catalog program as log records.
type EventConfig struct {
	// Program of the catalog whose events are sent, e.g. oom. It is loaded
	// even when programs does not list it (with default parameters).
	Program string `mapstructure:"program"`
	// Name of one event of the program, e.g. ebpf.oom.kill; empty for all
	// of its events.
	Name string `mapstructure:"name"`
	// MinSeverity drops events less severe than this: trace, debug, info,
	// warn, error or fatal. Empty sends all.
	MinSeverity string `mapstructure:"min_severity"`
	// RateLimit is how many events of one type a second are sent; more are
	// counted in otelcol_receiver_ebpf_dropped_events (reason rate_limited).
	// 0 is the sidecar's default, 1000.
	RateLimit int `mapstructure:"rate_limit"`
}

func (e *EventConfig) validate(i int) []error {
	var errs []error
	path := fmt.Sprintf("events[%d]", i)
	if e.Program == "" {
		errs = append(errs, fmt.Errorf("%s.program: must not be empty; set it to a catalog program that sends events, e.g. oom", path))
	}
	if e.MinSeverity != "" && !slices.Contains(severities, e.MinSeverity) {
		errs = append(errs, fmt.Errorf("%s.min_severity: %q is not one of %s", path, e.MinSeverity, strings.Join(severities, ", ")))
	}
	if e.RateLimit < 0 || e.RateLimit > maxEventRateLimit {
		errs = append(errs, fmt.Errorf("%s.rate_limit: %d is out of range; use 1..%d events per second, or 0 for the default (1000)", path, e.RateLimit, maxEventRateLimit))
	}
	return errs
}

// ProgramConfig requests one catalog program.
type ProgramConfig struct {
	// Name of the catalog program, e.g. "syscalls".
	Name string `mapstructure:"name"`
	// Parameters in text form; the sidecar validates them against the
	// program's parameter list.
	Parameters map[string]string `mapstructure:"parameters"`
	// Metrics adjusts the program's default metrics, by metric name, e.g.
	// {ebpf.syscalls: {cardinality_limit: 50}}. Only used when the receiver's
	// metrics list is empty (otherwise default metrics are not emitted).
	Metrics map[string]MetricOverrideConfig `mapstructure:"metrics"`
}

// MetricOverrideConfig changes how one default metric of a catalog program
// is emitted. Unset keys keep the catalog's choice.
type MetricOverrideConfig struct {
	// Unit of the metric; replaces the catalog's unit.
	Unit string `mapstructure:"unit"`
	// CardinalityLimit of the metric; see MetricConfig.CardinalityLimit.
	CardinalityLimit *int `mapstructure:"cardinality_limit"`
	// Temporality of a sum or histogram: cumulative or delta.
	Temporality Temporality `mapstructure:"temporality"`
	// PerCPU reads the map per CPU; see MetricConfig.PerCPU.
	PerCPU bool `mapstructure:"per_cpu"`
	// HistogramFormat of a histogram: explicit or exponential.
	HistogramFormat HistogramFormat `mapstructure:"histogram_format"`
}

// MetricConfig binds one map to one metric.
type MetricConfig struct {
	// Name of the metric, e.g. "ebpf.syscalls".
	Name string `mapstructure:"name"`
	// MapName is the BPF map the metric is read from.
	MapName string `mapstructure:"map_name"`
	// Program owning the map; needed only when several programs have a map
	// of that name.
	Program string `mapstructure:"program"`
	// Type is sum, gauge or histogram.
	Type MetricType `mapstructure:"type"`
	// Unit of the metric (UCUM). Defaults to the value field's unit, or for
	// histograms the layout unit; durations default to "s".
	Unit string `mapstructure:"unit"`
	// Scale multiplies every value (and histogram bound and sum) after the
	// unit conversion, e.g. 4096 for pages into bytes. Unset means 1.
	Scale float64 `mapstructure:"scale"`
	// Description of the metric. Defaults to the map's description.
	Description string `mapstructure:"description"`
	// ValueField is the value field read for sums and gauges. Defaults to
	// the map's only value field.
	ValueField string `mapstructure:"value_field"`
	// Attributes map key fields to attributes. Defaults to every key field
	// except a histogram's slot field, named by the field's catalog attribute.
	Attributes []AttributeConfig `mapstructure:"attributes"`
	// ValueAttribute reads several value fields into this one metric instead
	// of value_field, telling their data points apart by one attribute.
	ValueAttribute *ValueAttributeConfig `mapstructure:"value_attribute"`
	// CardinalityLimit is how many series (distinct resource and data point
	// attribute sets) the metric may have; data points of further series
	// are folded into one overflow series. Defaults to the receiver's
	// cardinality_limit.
	CardinalityLimit *int `mapstructure:"cardinality_limit"`
	// Temporality of a sum or histogram: cumulative (default) or delta.
	// Delta makes the sidecar clear the map on every read.
	Temporality Temporality `mapstructure:"temporality"`
	// PerCPU asks the sidecar for one entry per CPU of a per-CPU map; the
	// CPU becomes attribute cpu.logical_number.
	PerCPU bool `mapstructure:"per_cpu"`
	// HistogramFormat of a histogram: explicit (default) or exponential.
	HistogramFormat HistogramFormat `mapstructure:"histogram_format"`
}

// ValueAttributeConfig turns several value fields of a map into one metric:
// e.g. fields voluntary and involuntary into one context-switch count with
// attribute process.context_switch.type.
type ValueAttributeConfig struct {
	// Name is the attribute that tells the fields apart.
	Name string `mapstructure:"name"`
	// Fields lists the value fields and the attribute value of each.
	Fields []ValueFieldConfig `mapstructure:"fields"`
}

// ValueFieldConfig is one value field read by a ValueAttributeConfig.
type ValueFieldConfig struct {
	// Field is the value field of the map.
	Field string `mapstructure:"field"`
	// Value is the attribute value of the field's data points.
	Value string `mapstructure:"value"`
}

// AttributeConfig maps one key field of a map to an attribute.
type AttributeConfig struct {
	// Field is the key field of the map.
	Field string `mapstructure:"field"`
	// Name is the OpenTelemetry attribute name.
	Name string `mapstructure:"name"`
	// Resource puts the attribute on the resource instead of the data point.
	Resource bool `mapstructure:"resource"`
}

// validateTLS catches the two TLS settings that can never work with the
// sidecar, which serves a unix socket without TLS (its file mode guards it)
// and TCP with mutual TLS or, on loopback, plaintext.
func (cfg *Config) validateTLS() []error {
	var errs []error
	tls := cfg.TLS
	hasCA := tls.CAFile != "" || tls.CAPem != ""
	usesTLS := !tls.Insecure || hasCA // configtls: insecure with a CA still dials TLS
	if strings.HasPrefix(cfg.Endpoint, "unix:") && usesTLS {
		errs = append(errs, fmt.Errorf("tls: the sidecar serves its unix socket %s without TLS (the socket's mode guards it); remove tls, or set endpoint to the sidecar's host:port where it serves mutual TLS", cfg.Endpoint))
	}
	// This receiver defaults tls.insecure to true (for the unix socket), and
	// configtls then dials plaintext unless a CA is set: a client
	// certificate alone would silently never be sent.
	if tls.Insecure && !hasCA && (tls.CertFile != "" || tls.CertPem != "") {
		errs = append(errs, errors.New("tls.cert_file: a client certificate is set but tls.insecure is true (this receiver's default) and no tls.ca_file, so the connection would be plaintext and the certificate never sent; set tls.ca_file to the CA of the sidecar's certificate, or tls.insecure: false"))
	}
	return errs
}

// Validate checks the configuration's structure. Whether programs, maps and
// fields exist is checked against the sidecar's catalog at start.
func (cfg *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(cfg.Endpoint) == "" {
		errs = append(errs, fmt.Errorf("endpoint: must not be empty; set it to the sidecar's address, e.g. %s", defaultEndpoint))
	}
	errs = append(errs, cfg.validateTLS()...)
	if cfg.CollectionInterval < minCollectionInterval {
		errs = append(errs, fmt.Errorf("collection_interval: %s is below the minimum of %s; set it to %s or more (default %s)",
			cfg.CollectionInterval, minCollectionInterval, minCollectionInterval, defaultCollectionInterval))
	}
	if cfg.StartupTimeout < 0 {
		errs = append(errs, fmt.Errorf("startup_timeout: %s is negative; set it to how long start waits for the sidecar, or 0 not to wait (default %s)",
			cfg.StartupTimeout, defaultStartupTimeout))
	}
	if cfg.MaxSnapshotSizeMiB < 1 {
		errs = append(errs, fmt.Errorf("max_snapshot_size_mib: %d is not a size; set it to 1 or more (default %d)",
			cfg.MaxSnapshotSizeMiB, defaultMaxSnapshotSizeMiB))
	}
	if len(cfg.Programs) == 0 && len(cfg.Metrics) == 0 && len(cfg.Events) == 0 {
		errs = append(errs, errors.New("programs, metrics: both are empty; list catalog programs under programs (their default metrics are emitted), map-to-metric bindings under metrics, or kernel events under events"))
	}
	for i := range cfg.Events {
		errs = append(errs, cfg.Events[i].validate(i)...)
	}

	programSeen := map[string]int{}
	for i, p := range cfg.Programs {
		path := fmt.Sprintf("programs[%d].name", i)
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty; set it to a catalog program, e.g. syscalls", path))
			continue
		}
		if j, dup := programSeen[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: %q is already listed as programs[%d]; list each program once and merge their parameters", path, p.Name, j))
			continue
		}
		programSeen[p.Name] = i
		for _, name := range sortedKeys(p.Metrics) {
			o := p.Metrics[name]
			opath := fmt.Sprintf("programs[%d].metrics[%s]", i, name)
			if len(cfg.Metrics) > 0 {
				errs = append(errs, fmt.Errorf("%s: default metrics are not emitted because metrics lists the metrics to emit; set these keys on that metric under metrics instead", opath))
				continue
			}
			errs = append(errs, validateKnobs(opath, "", o.CardinalityLimit, o.Temporality, o.HistogramFormat)...)
		}
	}
	if cfg.CardinalityLimit <= 0 {
		errs = append(errs, fmt.Errorf("cardinality_limit: %d is not a number of series; set it to 1 or more (default %d)", cfg.CardinalityLimit, defaultCardinalityLimit))
	}

	metricSeen := map[string]int{}
	for i, m := range cfg.Metrics {
		errs = append(errs, m.validate(i, metricSeen)...)
	}
	return errors.Join(errs...)
}

func (m *MetricConfig) validate(i int, seen map[string]int) []error {
	var errs []error
	path := fmt.Sprintf("metrics[%d]", i)
	switch {
	case m.Name == "":
		errs = append(errs, fmt.Errorf("%s.name: must not be empty; set it to the metric name to emit, e.g. ebpf.syscalls", path))
	default:
		if j, dup := seen[m.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by metrics[%d]; metric names must be unique", path, m.Name, j))
		} else {
			seen[m.Name] = i
		}
	}
	if m.MapName == "" {
		errs = append(errs, fmt.Errorf("%s.map_name: must not be empty; set it to the BPF map the metric is read from", path))
	}
	switch {
	case m.Type == "":
		errs = append(errs, fmt.Errorf("%s.type: must not be empty; set it to one of %s", path, joinTypes()))
	case !m.Type.valid():
		errs = append(errs, fmt.Errorf("%s.type: %q is not one of %s", path, string(m.Type), joinTypes()))
	}
	errs = append(errs, validateKnobs(path, m.Type, m.CardinalityLimit, m.Temporality, m.HistogramFormat)...)
	attrSeen := map[string]int{}
	for j, a := range m.Attributes {
		apath := fmt.Sprintf("%s.attributes[%d]", path, j)
		if a.Field == "" {
			errs = append(errs, fmt.Errorf("%s.field: must not be empty; set it to a key field of map %q", apath, m.MapName))
		}
		if a.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: must not be empty; set it to the attribute name, e.g. process.pid", apath))
			continue
		}
		if k, dup := attrSeen[a.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by %s.attributes[%d]; attribute names must be unique within a metric", apath, a.Name, path, k))
			continue
		}
		attrSeen[a.Name] = j
	}
	if va := m.ValueAttribute; va != nil {
		vpath := path + ".value_attribute"
		switch {
		case m.Type == MetricTypeHistogram:
			errs = append(errs, fmt.Errorf("%s: does not apply to histograms; remove it or set type to sum or gauge", vpath))
		case m.ValueField != "":
			errs = append(errs, fmt.Errorf("%s: cannot be combined with %s.value_field; keep one of them", vpath, path))
		}
		if va.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: must not be empty; set it to the attribute that tells the fields apart, e.g. process.context_switch.type", vpath))
		} else if k, dup := attrSeen[va.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by %s.attributes[%d]; attribute names must be unique within a metric", vpath, va.Name, path, k))
		}
		if len(va.Fields) == 0 {
			errs = append(errs, fmt.Errorf("%s.fields: must list at least one {field, value}", vpath))
		}
		for j, f := range va.Fields {
			if f.Field == "" || f.Value == "" {
				errs = append(errs, fmt.Errorf("%s.fields[%d]: field and value must both be set, e.g. {field: voluntary, value: voluntary}", vpath, j))
			}
		}
	}
	return errs
}

// validateKnobs checks the keys a metric and a default-metric override
// share. typ is empty for overrides (the catalog's type is checked at
// start, by bindMetric, with knobsFitType).
func validateKnobs(path string, typ MetricType, limit *int, temp Temporality, format HistogramFormat) []error {
	var errs []error
	if limit != nil && *limit <= 0 {
		errs = append(errs, fmt.Errorf("%s.cardinality_limit: %d is not a number of series; set it to 1 or more, or remove it for the receiver's cardinality_limit", path, *limit))
	}
	switch temp {
	case "", TemporalityCumulative, TemporalityDelta:
	default:
		errs = append(errs, fmt.Errorf("%s.temporality: %q is not one of %s, %s", path, string(temp), TemporalityCumulative, TemporalityDelta))
	}
	switch format {
	case "", HistogramFormatExplicit, HistogramFormatExponential:
	default:
		errs = append(errs, fmt.Errorf("%s.histogram_format: %q is not one of %s, %s", path, string(format), HistogramFormatExplicit, HistogramFormatExponential))
	}
	if typ != "" {
		errs = append(errs, knobsFitType(path, typ, temp, format)...)
	}
	return errs
}

// knobsFitType checks temporality and histogram_format against the
// metric's type: the config's own, or for a default metric with an
// override, the catalog's.
func knobsFitType(path string, typ MetricType, temp Temporality, format HistogramFormat) []error {
	var errs []error
	if temp == TemporalityDelta && typ == MetricTypeGauge {
		errs = append(errs, fmt.Errorf("%s.temporality: delta applies to sums and histograms, not to a gauge; remove it", path))
	}
	if (format == HistogramFormatExplicit || format == HistogramFormatExponential) && typ != MetricTypeHistogram {
		errs = append(errs, fmt.Errorf("%s.histogram_format: applies to histograms only, and the type is %s; remove it", path, typ))
	}
	return errs
}
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func joinTypes() string {
	s := make([]string, len(validMetricTypes))
	for i, t := range validMetricTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

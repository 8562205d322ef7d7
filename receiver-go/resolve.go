package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// resolution is a config resolved against a DescribeResponse.
type resolution struct {
	request  *sidecarpb.StreamRequest
	bindings []*metricBinding
}

// resolve binds cfg to the sidecar's catalog. Every error names the config
// field, the bad value and the valid choices.
func resolve(cfg *Config, desc *sidecarpb.DescribeResponse) (*resolution, error) {
	cat := newCatalog(desc)
	var errs []error

	// Requested programs, in config order.
	type progReq struct {
		name   string
		params map[string]string
	}
	var programs []progReq
	requested := map[string]bool{}
	for i, p := range cfg.Programs {
		if _, ok := cat.programs[p.Name]; !ok {
			errs = append(errs, fmt.Errorf("programs[%d].name: unknown program %q; valid programs: %s", i, p.Name, cat.programNames()))
			continue
		}
		if requested[p.Name] {
			continue
		}
		errs = append(errs, checkParameters(cat.programs[p.Name], i, p.Parameters)...)
		requested[p.Name] = true
		programs = append(programs, progReq{name: p.Name, params: p.Parameters})
	}

	// The metrics to bind: the config's, or the default metrics of every
	// requested program.
	type metricSpec struct {
		path string // config path for errors
		cfg  MetricConfig
	}
	params := map[string]map[string]string{}
	programIndex := map[string]int{}
	for i, p := range cfg.Programs {
		if _, seen := programIndex[p.Name]; !seen {
			programIndex[p.Name] = i
			params[p.Name] = p.Parameters
		}
	}
	var specs []metricSpec
	if len(cfg.Metrics) > 0 {
		for i, m := range cfg.Metrics {
			specs = append(specs, metricSpec{path: fmt.Sprintf("metrics[%d]", i), cfg: m})
		}
	} else {
		for _, pr := range programs {
			p := cat.programs[pr.name]
			if len(p.GetDefaultMetrics()) == 0 {
				errs = append(errs, fmt.Errorf("programs: program %q has no default metrics in the sidecar's catalog; list the metrics to emit under metrics", pr.name))
			}
			pi := programIndex[pr.name]
			overrides := cfg.Programs[pi].Metrics
			var defaultNames []string
			for _, mb := range p.GetDefaultMetrics() {
				defaultNames = append(defaultNames, mb.GetName())
			}
			for _, name := range sortedKeys(overrides) {
				found := false
				for _, dn := range defaultNames {
					found = found || dn == name
				}
				if !found {
					valid := strings.Join(defaultNames, ", ")
					if valid == "" {
						valid = "(none)"
					}
					errs = append(errs, fmt.Errorf("programs[%d].metrics[%s]: program %q has no default metric %q; its default metrics: %s", pi, name, pr.name, name, valid))
				}
			}
			kept := 0
			for j, mb := range p.GetDefaultMetrics() {
				// A default metric on a map its parameters compile out is
				// left out.
				if mp := findMap(p, mb.GetMap()); mp != nil {
					if on, _ := mapEnabled(p, mp, pr.params); !on {
						continue
					}
				}
				kept++
				spec := metricSpec{
					path: fmt.Sprintf("catalog program %q default_metrics[%d] (%s)", pr.name, j, mb.GetName()),
					cfg:  metricConfigFromBinding(pr.name, mb),
				}
				if o, ok := overrides[mb.GetName()]; ok {
					spec.path = fmt.Sprintf("programs[%d].metrics[%s]", pi, mb.GetName())
					spec.cfg.applyOverride(o)
				}
				specs = append(specs, spec)
			}
			if kept == 0 && len(p.GetDefaultMetrics()) > 0 {
				errs = append(errs, fmt.Errorf("programs[%d].parameters: with these parameters program %q compiles out every map its default metrics read; change the parameters or list the metrics to emit under metrics", programIndex[pr.name], pr.name))
			}
		}
	}

	var bindings []*metricBinding
	names := map[string]string{}
	for _, s := range specs {
		b, err := bindMetric(cat, s.path, &s.cfg, cfg.CardinalityLimit)
		if err == nil {
			err = checkEnabled(cat, s.path, b, params, programIndex)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := names[b.name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is also emitted by %s; metric names must be unique", s.path, b.name, prev))
			continue
		}
		names[b.name] = s.path
		bindings = append(bindings, b)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Programs referenced by metrics but not listed are loaded too, with
	// their default parameters. One MapRequest per map: cleared on read when
	// its metrics are delta (all or none of them), per CPU when any metric
	// wants it (the others add the CPUs up, as any key field left out).
	seenMaps := map[mapKey]*sidecarpb.MapRequest{}
	firstReader := map[mapKey]*metricBinding{}
	req := &sidecarpb.StreamRequest{Interval: durationpb.New(cfg.CollectionInterval)}
	for _, b := range bindings {
		if !requested[b.program] {
			requested[b.program] = true
			programs = append(programs, progReq{name: b.program})
		}
		k := mapKey{b.program, b.mapName}
		mr, seen := seenMaps[k]
		if !seen {
			mr = &sidecarpb.MapRequest{Program: b.program, Map: b.mapName, ClearAfterRead: b.delta}
			seenMaps[k] = mr
			firstReader[k] = b
			req.Maps = append(req.Maps, mr)
		} else if mr.ClearAfterRead != b.delta {
			d, c := b, firstReader[k]
			if !d.delta {
				d, c = c, d
			}
			errs = append(errs, fmt.Errorf("%s.temporality: map %s/%s is read by delta metric %s (%s) and by %s metric %s (%s); a delta read clears the map, so every metric on a map must be delta or none; make their temporality the same",
				b.path, b.program, b.mapName, d.name, d.path, temporalityWord(c), c.name, c.path))
		}
		mr.PerCpu = mr.PerCpu || b.perCPU
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, pr := range programs {
		var params map[string]string
		if len(pr.params) > 0 {
			params = make(map[string]string, len(pr.params))
			for k, v := range pr.params {
				params[k] = v
			}
		}
		req.Programs = append(req.Programs, &sidecarpb.ProgramRequest{Name: pr.name, Parameters: params})
	}
	return &resolution{request: req, bindings: bindings}, nil
}

func temporalityWord(b *metricBinding) string {
	if b.typ == MetricTypeGauge {
		return "gauge"
	}
	return string(TemporalityCumulative)
}

// applyOverride sets the keys o sets.
func (m *MetricConfig) applyOverride(o MetricOverrideConfig) {
	if o.Unit != "" {
		m.Unit = o.Unit
	}
	if o.CardinalityLimit != nil {
		m.CardinalityLimit = o.CardinalityLimit
	}
	if o.Temporality != "" {
		m.Temporality = o.Temporality
	}
	if o.PerCPU {
		m.PerCPU = true
	}
	if o.HistogramFormat != "" {
		m.HistogramFormat = o.HistogramFormat
	}
}

func metricConfigFromBinding(program string, mb *sidecarpb.MetricBinding) MetricConfig {
	m := MetricConfig{
		Name:        mb.GetName(),
		MapName:     mb.GetMap(),
		Program:     program,
		Unit:        mb.GetUnit(),
		Description: mb.GetDescription(),
		ValueField:  mb.GetValueField(),
	}
	if mb.GetProgram() != "" {
		m.Program = mb.GetProgram()
	}
	switch mb.GetType() {
	case sidecarpb.MetricType_METRIC_TYPE_SUM:
		m.Type = MetricTypeSum
	case sidecarpb.MetricType_METRIC_TYPE_GAUGE:
		m.Type = MetricTypeGauge
	case sidecarpb.MetricType_METRIC_TYPE_HISTOGRAM:
		m.Type = MetricTypeHistogram
	default:
		m.Type = MetricType(mb.GetType().String())
	}
	for _, a := range mb.GetAttributes() {
		m.Attributes = append(m.Attributes, AttributeConfig{Field: a.GetField(), Name: a.GetName(), Resource: a.GetResource()})
	}
	if mb.GetValueAttribute() != "" {
		va := &ValueAttributeConfig{Name: mb.GetValueAttribute()}
		for _, vf := range mb.GetValueFields() {
			va.Fields = append(va.Fields, ValueFieldConfig{Field: vf.GetField(), Value: vf.GetAttributeValue()})
		}
		m.ValueAttribute = va
	}
	return m
}

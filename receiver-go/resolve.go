package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// resolution is a config resolved against a DescribeResponse.
type resolution struct {
	request  *sidecarpb.StreamRequest
	bindings []*metricBinding
}

// judge asks the sidecar's judge about a request (the Plan call): the
// sidecar alone knows the catalog's rules on parameters and maps.
type judge func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error)

// resolve binds cfg to the sidecar's catalog, asking the sidecar's judge
// about programs and maps. Every error names the config field, the bad
// value and the valid choices. Events are requested too (see resolveFor).
func resolve(cfg *Config, desc *sidecarpb.DescribeResponse, plan judge) (*resolution, error) {
	return resolveFor(cfg, desc, plan, true)
}

// resolveFor is resolve for a receiver that is in a logs pipeline or not
// (withLogs): events are checked either way, and requested only withLogs.
func resolveFor(cfg *Config, desc *sidecarpb.DescribeResponse, plan judge, withLogs bool) (*resolution, error) {
	cat := newCatalog(desc)
	var errs []error
	interval := durationpb.New(cfg.CollectionInterval)

	// The programs the config lists, in config order, once each; the judge
	// checks their names and parameters and says which maps they compile in.
	listed := &sidecarpb.StreamRequest{Interval: interval}
	paths := requestPaths{}
	programIndex := map[string]int{}
	for i, p := range cfg.Programs {
		if _, seen := programIndex[p.Name]; seen {
			continue
		}
		programIndex[p.Name] = i
		listed.Programs = append(listed.Programs, &sidecarpb.ProgramRequest{Name: p.Name, Parameters: copyParams(p.Parameters)})
		paths.programs = append(paths.programs, fmt.Sprintf("programs[%d]", i))
	}
	verdict, err := plan(listed)
	if err != nil {
		return nil, err
	}
	errs = append(errs, paths.translate(verdict.GetErrors())...)
	cat.usePlanned(verdict.GetPrograms())
	compiledIn := map[string]map[string]bool{} // program -> maps its parameters compile in
	for _, pp := range verdict.GetPrograms() {
		compiledIn[pp.GetName()] = map[string]bool{}
		for _, m := range pp.GetMaps() {
			compiledIn[pp.GetName()][m.GetName()] = true
		}
	}

	// The metrics to bind: the config's, or the default metrics of every
	// listed program the judge accepted.
	type metricSpec struct {
		path string // config path for errors
		cfg  MetricConfig
	}
	var specs []metricSpec
	if len(cfg.Metrics) > 0 {
		for i, m := range cfg.Metrics {
			specs = append(specs, metricSpec{path: fmt.Sprintf("metrics[%d]", i), cfg: m})
		}
	} else {
		for _, pr := range listed.Programs {
			p, accepted := cat.programs[pr.Name], compiledIn[pr.Name] != nil
			if p == nil || !accepted {
				continue // the judge's error says why
			}
			if len(p.GetDefaultMetrics()) == 0 {
				if !slices.ContainsFunc(cfg.Events, func(e EventConfig) bool { return e.Program == pr.Name }) {
					errs = append(errs, fmt.Errorf("programs: program %q has no default metrics in the sidecar's catalog; list the metrics to emit under metrics", pr.Name))
				}
				continue // listed for its events (with its parameters)
			}
			pi := programIndex[pr.Name]
			overrides := cfg.Programs[pi].Metrics
			var defaultNames []string
			for _, mb := range p.GetDefaultMetrics() {
				defaultNames = append(defaultNames, mb.GetName())
			}
			for _, name := range sortedKeys(overrides) {
				if !slices.Contains(defaultNames, name) {
					valid := strings.Join(defaultNames, ", ")
					if valid == "" {
						valid = "(none)"
					}
					errs = append(errs, fmt.Errorf("programs[%d].metrics[%s]: program %q has no default metric %q; its default metrics: %s", pi, name, pr.Name, name, valid))
				}
			}
			kept := 0
			for j, mb := range p.GetDefaultMetrics() {
				// A default metric on a map its parameters compile out is
				// left out.
				if !compiledIn[pr.Name][mb.GetMap()] {
					continue
				}
				kept++
				spec := metricSpec{
					path: fmt.Sprintf("catalog program %q default_metrics[%d] (%s)", pr.Name, j, mb.GetName()),
					cfg:  metricConfigFromBinding(pr.Name, mb),
				}
				if o, ok := overrides[mb.GetName()]; ok {
					spec.path = fmt.Sprintf("programs[%d].metrics[%s]", pi, mb.GetName())
					spec.cfg.applyOverride(o)
				}
				specs = append(specs, spec)
			}
			if kept == 0 && len(p.GetDefaultMetrics()) > 0 {
				errs = append(errs, fmt.Errorf("programs[%d].parameters: with these parameters program %q compiles out every map its default metrics read; change the parameters or list the metrics to emit under metrics", pi, pr.Name))
			}
		}
	}

	events, eventErrs := resolveEvents(cfg, cat)
	errs = append(errs, eventErrs...)

	var bindings []*metricBinding
	names := map[string]string{}
	for _, s := range specs {
		b, err := bindMetric(cat, s.path, &s.cfg, cfg.CardinalityLimit)
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
	// Packed columns always (an older sidecar sends classic ones, which
	// convert alike); only changed entries when the config asks.
	req := &sidecarpb.StreamRequest{
		Interval: interval, Programs: slices.Clone(listed.Programs),
		PackedColumns: true, ChangesOnly: cfg.ChangesOnly,
	}
	seenMaps := map[mapKey]*sidecarpb.MapRequest{}
	firstReader := map[mapKey]*metricBinding{}
	for _, b := range bindings {
		if !slices.ContainsFunc(req.Programs, func(p *sidecarpb.ProgramRequest) bool { return p.GetName() == b.program }) {
			req.Programs = append(req.Programs, &sidecarpb.ProgramRequest{Name: b.program})
			paths.programs = append(paths.programs, fmt.Sprintf("%s (program %q, loaded for it)", b.path, b.program))
		}
		k := mapKey{b.program, b.mapName}
		mr, seen := seenMaps[k]
		if !seen {
			mr = &sidecarpb.MapRequest{Program: b.program, Map: b.mapName, ClearAfterRead: b.delta}
			seenMaps[k] = mr
			firstReader[k] = b
			req.Maps = append(req.Maps, mr)
			paths.maps = append(paths.maps, b.path)
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
	if withLogs {
		for i, e := range events {
			if !slices.ContainsFunc(req.Programs, func(p *sidecarpb.ProgramRequest) bool { return p.GetName() == e.GetProgram() }) {
				req.Programs = append(req.Programs, &sidecarpb.ProgramRequest{Name: e.GetProgram()})
				paths.programs = append(paths.programs, fmt.Sprintf("events[%d].program (program %q, loaded for it)", i, e.GetProgram()))
			}
			req.Events = append(req.Events, e)
			paths.events = append(paths.events, fmt.Sprintf("events[%d]", i))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// The whole request, as Stream will judge it (maps on programs the
	// config did not list, maps compiled out, per-CPU requests).
	verdict, err = plan(req)
	if err != nil {
		return nil, err
	}
	if errs := paths.translate(verdict.GetErrors()); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &resolution{request: req, bindings: bindings}, nil
}

func copyParams(params map[string]string) map[string]string {
	if len(params) == 0 {
		return nil
	}
	return maps.Clone(params)
}

// requestPaths remembers which config field each part of a StreamRequest
// came from, to report the judge's findings against the config.
type requestPaths struct {
	programs []string // config path of request.programs[i]
	maps     []string // config path of the first metric reading request.maps[i]
	events   []string // config path of request.events[i]
}

var requestField = regexp.MustCompile(`^(programs|maps|events)\[(\d+)\](.*)$`)

// translate turns the judge's findings into errors naming config fields:
// programs[k].parameters.x becomes the listed program's path, maps[k].map
// the map_name of the metric that reads the map, interval the
// collection_interval.
func (p requestPaths) translate(found []*sidecarpb.FieldError) []error {
	var errs []error
	for _, fe := range found {
		path := "the request to the sidecar: " + fe.GetField()
		if fe.GetField() == "interval" {
			path = "collection_interval"
		} else if m := requestField.FindStringSubmatch(fe.GetField()); m != nil {
			i, _ := strconv.Atoi(m[2])
			rest := m[3]
			switch {
			case m[1] == "programs" && i < len(p.programs):
				path = p.programs[i] + rest
			case m[1] == "maps" && i < len(p.maps):
				if rest == ".map" || rest == ".program" {
					rest = ".map_name"
				}
				path = p.maps[i] + rest
			case m[1] == "events" && i < len(p.events):
				if rest == ".event" {
					rest = ".name"
				}
				path = p.events[i] + rest
			}
		}
		errs = append(errs, fmt.Errorf("%s: %s", path, fe.GetMessage()))
	}
	return errs
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

// resolveEvents checks the events the config asks for against the catalog:
// programs that exist and send events, event names they send.
func resolveEvents(cfg *Config, cat *catalog) ([]*sidecarpb.EventRequest, []error) {
	var out []*sidecarpb.EventRequest
	var errs []error
	for i, e := range cfg.Events {
		path := fmt.Sprintf("events[%d]", i)
		p := cat.programs[e.Program]
		if p == nil {
			errs = append(errs, fmt.Errorf("%s.program: unknown program %q; programs that send events: %s", path, e.Program, eventPrograms(cat)))
			continue
		}
		var names []string
		for _, ev := range p.GetEvents() {
			names = append(names, ev.GetName())
		}
		if len(names) == 0 {
			errs = append(errs, fmt.Errorf("%s.program: program %q sends no events; programs that send events: %s", path, e.Program, eventPrograms(cat)))
			continue
		}
		if e.Name != "" && !slices.Contains(names, e.Name) {
			errs = append(errs, fmt.Errorf("%s.name: program %q has no event %q; its events: %s", path, e.Program, e.Name, strings.Join(names, ", ")))
			continue
		}
		out = append(out, &sidecarpb.EventRequest{
			Program:     e.Program,
			Event:       e.Name,
			MinSeverity: e.MinSeverity,
			RateLimit:   uint32(e.RateLimit), //nolint:gosec // validated 0..maxEventRateLimit
		})
	}
	return out, errs
}

func eventPrograms(cat *catalog) string {
	var names []string
	for name, p := range cat.programs {
		if len(p.GetEvents()) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

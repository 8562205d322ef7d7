package ebpfreceiver

import (
	"fmt"
	"strings"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// A small fake catalog (the sidecar's Describe response) shared by the
// resolution, conversion and receiver tests. The real catalog's is
// testdata/catalog/describe.json (realDescribe, examples_test.go).

const (
	tUint = sidecarpb.FieldType_FIELD_TYPE_UINT
	tInt  = sidecarpb.FieldType_FIELD_TYPE_INT
	tStr  = sidecarpb.FieldType_FIELD_TYPE_STRING
)

func field(name string, typ sidecarpb.FieldType, unit, attribute string) *sidecarpb.Field {
	return &sidecarpb.Field{Name: name, Type: typ, Unit: unit, Attribute: attribute}
}

func testDescribe() *sidecarpb.DescribeResponse {
	counters := sidecarpb.MapKind_MAP_KIND_COUNTERS
	return &sidecarpb.DescribeResponse{
		SidecarVersion:  "0.0.0-test",
		ProtocolVersion: "v1",
		Kernel:          &sidecarpb.KernelInfo{Release: "6.18.0-test", Btf: true},
		Programs: []*sidecarpb.Program{
			{
				Name: "syscalls",
				Maps: []*sidecarpb.Map{{
					Name:        "syscalls",
					Kind:        counters,
					Description: "Syscalls by process and syscall.",
					KeyFields: []*sidecarpb.Field{
						field("pid", tUint, "1", "process.pid"),
						field("comm", tStr, "1", "process.executable.name"),
						field("syscall", tStr, "1", "system.syscall.name"),
					},
					ValueFields: []*sidecarpb.Field{field("count", tUint, "{syscall}", "")},
				}, {
					// Compiled in only with errors: "true".
					Name:        "errors",
					Kind:        counters,
					EnabledBy:   "errors",
					KeyFields:   []*sidecarpb.Field{field("errno", tStr, "1", "error.type")},
					ValueFields: []*sidecarpb.Field{field("count", tUint, "{error}", "")},
				}},
				Parameters: []*sidecarpb.Parameter{
					{Name: "per_process", Type: "bool", Default: "true"},
					{Name: "errors", Type: "bool", Default: "false"},
					{Name: "max_entries", Type: "int", Default: "10240", Min: 128, Max: 1048576},
					{Name: "mode", Type: "enum", Default: "pid", Allowed: []string{"pid", "comm"}},
				},
				DefaultMetrics: []*sidecarpb.MetricBinding{{
					Name:       "ebpf.syscalls",
					Map:        "syscalls",
					Type:       sidecarpb.MetricType_METRIC_TYPE_SUM,
					Unit:       "{syscall}",
					ValueField: "count",
					Attributes: []*sidecarpb.AttributeBinding{
						{Field: "pid", Name: "process.pid", Resource: true},
						{Field: "comm", Name: "process.executable.name", Resource: true},
						{Field: "syscall", Name: "system.syscall.name"},
					},
				}, {
					Name: "ebpf.syscalls.errors",
					Map:  "errors",
					Type: sidecarpb.MetricType_METRIC_TYPE_SUM,
				}},
			},
			{
				// A second program with a map of the same name: ambiguity.
				Name: "syscount",
				Maps: []*sidecarpb.Map{{
					Name:        "syscalls",
					Kind:        counters,
					KeyFields:   []*sidecarpb.Field{field("syscall", tStr, "1", "system.syscall.name")},
					ValueFields: []*sidecarpb.Field{field("count", tUint, "{syscall}", "")},
				}},
			},
			{
				Name: "oncpu",
				Maps: []*sidecarpb.Map{{
					Name:      "oncpu",
					Kind:      counters,
					KeyFields: []*sidecarpb.Field{field("pid", tUint, "1", "process.pid")},
					ValueFields: []*sidecarpb.Field{
						field("time_ns", tUint, "ns", ""),
						field("switches", tUint, "{switch}", ""),
					},
				}, {
					// Several value fields of one unit: value_attribute.
					Name:      "switches",
					Kind:      counters,
					KeyFields: []*sidecarpb.Field{field("pid", tUint, "1", "process.pid")},
					ValueFields: []*sidecarpb.Field{
						field("voluntary", tUint, "{context_switch}", ""),
						field("involuntary", tUint, "{context_switch}", ""),
						field("wait_ns", tUint, "ns", ""),
						field("comm", tStr, "1", ""),
					},
				}, {
					Name:        "runnable",
					Kind:        counters,
					Description: "Runnable tasks per CPU.",
					KeyFields:   []*sidecarpb.Field{field("cpu", tUint, "1", "cpu.logical_number")},
					ValueFields: []*sidecarpb.Field{field("tasks", tInt, "{task}", "")},
				}},
			},
			{
				Name: "runqlat",
				Maps: []*sidecarpb.Map{{
					Name:        "runq_latency",
					Kind:        sidecarpb.MapKind_MAP_KIND_HISTOGRAM,
					Description: "Run queue latency.",
					KeyFields: []*sidecarpb.Field{
						field("comm", tStr, "1", "process.executable.name"),
						field("slot", tUint, "1", ""),
					},
					ValueFields: []*sidecarpb.Field{
						field("count", tUint, "1", ""),
						field("sum", tUint, "ns", ""),
					},
					Histogram: &sidecarpb.HistogramLayout{
						SlotField:  "slot",
						Convention: sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_BCC,
						Slots:      6,
						CountField: "count",
						SumField:   "sum",
						Unit:       "ns",
					},
				}},
				DefaultMetrics: []*sidecarpb.MetricBinding{{
					Name: "ebpf.sched.runqueue.latency",
					Map:  "runq_latency",
					Type: sidecarpb.MetricType_METRIC_TYPE_HISTOGRAM,
				}},
			},
			{
				// The other slot conventions, and a key field the sidecar
				// derives from another (container_id from cgroup_id).
				Name: "misc",
				Maps: []*sidecarpb.Map{
					histMap("exp_latency", sidecarpb.SlotConvention_SLOT_CONVENTION_LOG2_EXPONENT, 8, "us", nil),
					histMap("linear_size", sidecarpb.SlotConvention_SLOT_CONVENTION_LINEAR, 5, "By", func(h *sidecarpb.HistogramLayout) { h.LinearWidth = 512 }),
					histMap("fixed_wait", sidecarpb.SlotConvention_SLOT_CONVENTION_FIXED, 4, "ms", func(h *sidecarpb.HistogramLayout) { h.Bounds = []float64{1, 5, 25} }),
					{
						Name: "by_container",
						Kind: counters,
						KeyFields: []*sidecarpb.Field{
							field("cgroup_id", tUint, "1", ""),
							{Name: "container_id", Type: tStr, Unit: "1", Attribute: "container.id", DerivedFrom: "cgroup_id"},
						},
						ValueFields: []*sidecarpb.Field{field("bytes", tUint, "By", "")},
					},
				},
			},
		},
	}
}

// histMap is a histogram map keyed by slot only, with count and sum.
func histMap(name string, conv sidecarpb.SlotConvention, slots uint32, unit string, mutate func(*sidecarpb.HistogramLayout)) *sidecarpb.Map {
	h := &sidecarpb.HistogramLayout{SlotField: "slot", Convention: conv, Slots: slots, CountField: "count", SumField: "sum", Unit: unit}
	if mutate != nil {
		mutate(h)
	}
	return &sidecarpb.Map{
		Name:        name,
		Kind:        sidecarpb.MapKind_MAP_KIND_HISTOGRAM,
		KeyFields:   []*sidecarpb.Field{field("slot", tUint, "1", "")},
		ValueFields: []*sidecarpb.Field{field("count", tUint, "1", ""), field("sum", tUint, unit, "")},
		Histogram:   h,
	}
}

// fakeJudge stands in for the sidecar's Plan in tests of one layer, with
// canned answers: it knows the described programs' names and maps, reports
// unknown programs, treats the maps listed in compiledOut ("program/map")
// as compiled out whatever the parameters, and accepts every parameter
// value. The rules themselves are the sidecar's (plan.py) and tested there.
func fakeJudge(desc *sidecarpb.DescribeResponse, compiledOut ...string) judge {
	out := map[string]bool{}
	for _, m := range compiledOut {
		out[m] = true
	}
	return func(req *sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		programs := map[string]*sidecarpb.Program{}
		var names []string
		for _, p := range desc.GetPrograms() {
			programs[p.GetName()] = p
			names = append(names, p.GetName())
		}
		resp := &sidecarpb.PlanResponse{}
		for i, pr := range req.GetPrograms() {
			p, ok := programs[pr.GetName()]
			if !ok {
				resp.Errors = append(resp.Errors, &sidecarpb.FieldError{
					Field:   fmt.Sprintf("programs[%d].name", i),
					Message: fmt.Sprintf("unknown program %q; valid programs: %s", pr.GetName(), strings.Join(names, ", ")),
				})
				continue
			}
			planned := &sidecarpb.PlannedProgram{Name: p.GetName(), Parameters: pr.GetParameters()}
			for _, m := range p.GetMaps() {
				if !out[p.GetName()+"/"+m.GetName()] {
					planned.Maps = append(planned.Maps, m)
				}
			}
			resp.Programs = append(resp.Programs, planned)
		}
		for i, mr := range req.GetMaps() {
			p := programs[mr.GetProgram()]
			m := findMap(p, mr.GetMap())
			if p != nil && m != nil && out[p.GetName()+"/"+m.GetName()] {
				resp.Errors = append(resp.Errors, &sidecarpb.FieldError{
					Field: fmt.Sprintf("maps[%d].map", i),
					Message: fmt.Sprintf("map %s/%s exists only when parameter '%s' of program '%s' is true, and it is false; set that parameter to true",
						p.GetName(), m.GetName(), m.GetEnabledBy(), p.GetName()),
				})
			}
		}
		return resp, nil
	}
}

// testJudge is fakeJudge over the fake catalog, whose "errors" map is
// compiled out as with the "errors" parameter's default.
func testJudge() judge { return fakeJudge(testDescribe(), "syscalls/errors") }

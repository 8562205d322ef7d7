package ebpfreceiver

import "testing"

// A metric's map is looked up in the catalog; the errors list the choices.
func TestResolveLocatesMaps(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
		{
			name: "unknown map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscall", Type: MetricTypeSum}),
			want: `metrics[0].map_name: no catalog program has a map "syscall"; valid maps (program/map): syscalls/syscalls, syscalls/errors, syscount/syscalls, oncpu/oncpu, oncpu/switches, oncpu/runnable, runqlat/runq_latency, misc/exp_latency, misc/linear_size, misc/fixed_wait, misc/by_container`,
		},
		{
			name: "ambiguous map",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscalls", Type: MetricTypeSum}),
			want: `metrics[0].map_name: map "syscalls" exists in programs syscalls, syscount; set metrics[0].program to one of them`,
		},
		{
			name: "unknown metric program",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "syscalls", Program: "sys", Type: MetricTypeSum}),
			want: `metrics[0].program: unknown program "sys"; valid programs: syscalls, syscount, oncpu, runqlat, misc`,
		},
		{
			name: "map not in the named program",
			cfg:  cfgWith(nil, MetricConfig{Name: "x", MapName: "oncpu", Program: "syscalls", Type: MetricTypeSum}),
			want: `metrics[0].map_name: program "syscalls" has no map "oncpu"; its maps: syscalls, errors`,
		},
	})
}

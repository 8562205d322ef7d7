package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Parameter values are checked against their types at start.
func TestResolveChecksParameters(t *testing.T) {
	checkResolveErrors(t, []resolveErrorCase{
		{
			name: "parameters checked against their types at start",
			cfg: cfgWith([]ProgramConfig{{Name: "syscalls", Parameters: map[string]string{
				"max_entries": "7", "errors": "yes", "mode": "tid", "cflags": "-O0", "per_process": "many",
			}}}),
			want: `programs[0].parameters.cflags: program "syscalls" has no parameter "cflags"; its parameters: per_process, errors, max_entries, mode` + "\n" +
				`programs[0].parameters.errors: "yes" is not a boolean; use "true" or "false"` + "\n" +
				`programs[0].parameters.max_entries: 7 is out of range; use 128..1048576` + "\n" +
				`programs[0].parameters.mode: "tid" is not one of pid, comm` + "\n" +
				`programs[0].parameters.per_process: "many" is not a boolean; use "true" or "false"`,
		},
	})
}

func TestResolveCompiledOutMaps(t *testing.T) {
	// Default: errors is off, so its default metric is left out.
	res, err := resolve(cfgWith([]ProgramConfig{{Name: "syscalls"}}), testDescribe())
	require.NoError(t, err)
	require.Len(t, res.bindings, 1)
	assert.Equal(t, "ebpf.syscalls", res.bindings[0].name)

	// Turned on: both default metrics, both maps.
	res, err = resolve(cfgWith([]ProgramConfig{{Name: "syscalls", Parameters: map[string]string{"errors": "true"}}}), testDescribe())
	require.NoError(t, err)
	require.Len(t, res.bindings, 2)
	assert.Equal(t, "ebpf.syscalls.errors", res.bindings[1].name)
	assert.Len(t, res.request.Maps, 2)

	// A metric on the compiled-out map fails at start, naming the fix.
	_, err = resolve(cfgWith([]ProgramConfig{{Name: "runqlat"}, {Name: "syscalls"}},
		MetricConfig{Name: "x", MapName: "errors", Type: MetricTypeSum}), testDescribe())
	assert.EqualError(t, err, `metrics[0].map_name: map syscalls/errors exists only when parameter "errors" of program "syscalls" is true, and it is false; set programs[1].parameters.errors to "true"`)
	_, err = resolve(cfgWith(nil, MetricConfig{Name: "x", MapName: "errors", Type: MetricTypeSum}), testDescribe())
	assert.EqualError(t, err, `metrics[0].map_name: map syscalls/errors exists only when parameter "errors" of program "syscalls" is true, and it is false; add {name: syscalls, parameters: {errors: "true"}} to programs`)
}

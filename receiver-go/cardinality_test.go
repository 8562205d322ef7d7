package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
)

func TestCardinalityLimitAcrossSnapshots(t *testing.T) {
	cfg := cfgWith(nil, MetricConfig{
		Name: "ebpf.container.bytes", MapName: "by_container", Type: MetricTypeSum, CardinalityLimit: intp(2),
		Attributes: []AttributeConfig{{Field: "container_id", Name: "container.id", Resource: true}},
	})
	env := newConvEnv(t, cfg, testDescribe())
	overflowLogs := func() int { return env.logs.FilterMessageSnippet("reached its cardinality limit").Len() }

	// a and b are admitted; c is folded.
	got := containerPoints(t, env.conv.convert(containerSnapshot(1, 10, 1, "a", "b", "c")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "b": {1, 1}, "overflow": {1, 1}}, got)
	assert.Equal(t, 1, overflowLogs())
	logged := env.logs.FilterMessageSnippet("reached its cardinality limit").All()[0].ContextMap()
	assert.Equal(t, "ebpf.container.bytes", logged["metric"])
	assert.Equal(t, int64(2), logged["cardinality_limit"])
	assert.Equal(t, "metrics[0]", logged["config"])

	// Admitted series keep flowing although new ones came first in the map;
	// c and d share the one overflow series. Logged once per metric.
	got = containerPoints(t, env.conv.convert(containerSnapshot(2, 20, 1, "d", "c", "b", "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "b": {1, 1}, "overflow": {2, 1}}, got)
	assert.Equal(t, 1, overflowLogs())
	assert.Equal(t, map[string]int64{"metric=ebpf.container.bytes": 3}, env.counterValues(t, metricOverflowPoints),
		"1 point folded in the first snapshot, 2 in the second")

	// Under the limit: no overflow series.
	got = containerPoints(t, env.conv.convert(containerSnapshot(3, 30, 1, "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}}, got)

	// Series that left the map (their process exited and the sidecar deleted
	// them) free their places: c is admitted now, d is folded.
	got = containerPoints(t, env.conv.convert(containerSnapshot(4, 32, 1, "c", "d", "a")))
	assert.Equal(t, map[string][2]int64{"a": {1, 1}, "c": {1, 1}, "overflow": {1, 1}}, got)
	assert.Equal(t, 1, overflowLogs())

	// A re-attached program starts the admitted set over.
	got = containerPoints(t, env.conv.convert(containerSnapshot(4, 40, 35, "c", "d", "a")))
	assert.Equal(t, map[string][2]int64{"c": {1, 35}, "d": {1, 35}, "overflow": {1, 35}}, got)
	assert.Equal(t, 2, overflowLogs(), "a new series set logs its overflow again")

	// So does a new stream (a new converter).
	conv2 := newConverter(env.res.bindings, "1.2.3", zap.NewNop(), env.conv.tel)
	got = containerPoints(t, conv2.convert(containerSnapshot(1, 50, 35, "a", "b", "c")))
	assert.Equal(t, map[string][2]int64{"a": {1, 35}, "b": {1, 35}, "overflow": {1, 35}}, got)
	assert.Equal(t, map[string]int64{"metric=ebpf.container.bytes": 6}, env.counterValues(t, metricOverflowPoints))
}

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"go.uber.org/zap"
)

// seriesSet is the series of one metric admitted under its cardinality
// limit: those of the latest snapshot, since the stream started or the
// map's program was re-attached.
type seriesSet struct {
	attach      uint64
	keys        map[string]struct{}
	overflowing bool // the overflow has been logged
}

// keepOnly forgets admitted series that are not in the current snapshot
// (seen: series key -> 1 admitted in it). A series leaves a map when its
// process exits and the sidecar deletes its entries; without forgetting it,
// a node with process churn would fill the limit with dead pids and fold
// every new process into the overflow series for good.
func (s *seriesSet) keepOnly(seen map[string]int) {
	for k := range s.keys {
		if seen[k] != 1 {
			delete(s.keys, k)
		}
	}
}

// admit tells whether the series (res, pt) of binding bi is within its
// cardinality limit, admitting it when there is room.
func (mb *metricsBuilder) admit(bi int, b *metricBinding, rk, pk string) bool {
	key := rk + "|" + pk
	seen := mb.seen[bi]
	if seen == nil {
		seen = map[string]int{}
		mb.seen[bi] = seen
	}
	switch seen[key] {
	case 1:
		return true
	case 2:
		return false
	}
	set := mb.series[bi]
	_, ok := set.keys[key]
	if !ok && len(set.keys) < b.limit {
		set.keys[key] = struct{}{}
		ok = true
	}
	if ok {
		seen[key] = 1
	} else {
		seen[key] = 2
		mb.folded[bi]++
	}
	return ok
}

// overflowAttrs are the point attributes of the overflow series (the
// OpenTelemetry SDK's convention); its resource has no attributes.
var overflowAttrs = []attr{{name: "otel.metric.overflow", isBool: true, num: 1}}

// noteOverflow counts the series of binding i folded into its overflow
// series in this snapshot, and logs the first overflow of a series set.
func (c *converter) noteOverflow(i int, b *metricBinding, folded int) {
	if folded == 0 {
		return
	}
	c.tel.overflow(b.name, folded)
	set := c.series[i]
	if !set.overflowing {
		set.overflowing = true
		c.logger.Warn("Metric reached its cardinality limit: data points of new series are folded into one series with attribute otel.metric.overflow=true; raise cardinality_limit or bind fewer attributes",
			zap.String("metric", b.name), zap.Int("cardinality_limit", b.limit), zap.String("config", b.path))
	}
}

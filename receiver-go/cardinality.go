package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"go.uber.org/zap"
)

// seriesSet is the series of one metric admitted under its cardinality
// limit: those of the latest snapshot, since the stream started or the
// map's program was re-attached, by series key (metricsBuilder).
type seriesSet struct {
	attach      uint64
	keys        map[string]*seriesEntry
	overflowing bool // the overflow has been logged
	// gen tells the sets of a binding apart (it grows with every new set),
	// so that a changes-only table's series cache filled under an earlier
	// set is not used (seriesCache).
	gen uint64
}

// seriesEntry is one admitted series.
type seriesEntry struct {
	key   string
	snap  uint64 // the last snapshot it was in
	point int32  // its point in that snapshot
}

// keepOnly forgets admitted series that are not in snapshot snap. A series
// leaves a map when its process exits and the sidecar deletes its entries;
// without forgetting it, a node with process churn would fill the limit
// with dead pids and fold every new process into the overflow series for
// good.
func (s *seriesSet) keepOnly(snap uint64) {
	for k, e := range s.keys {
		if e.snap != snap {
			delete(s.keys, k)
		}
	}
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

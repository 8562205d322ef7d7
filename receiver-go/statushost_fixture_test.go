package ebpfreceiver

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
)

// collectorStatusTransitions is the collector's component status state
// machine: from each status, the statuses a component may report next.
// Copied from newFSM in go.opentelemetry.io/collector/service@v0.165.0,
// internal/status/status.go, which is internal and cannot be imported (and
// contrib's pkg/status@v0.165.0 only aggregates statuses). The collector
// drops a report that breaks these rules, so a receiver that breaks them
// shows a status that never changes again. Same-status reports are allowed
// only where the collector lists them.
var collectorStatusTransitions = map[componentstatus.Status][]componentstatus.Status{
	componentstatus.StatusNone: {componentstatus.StatusStarting},
	componentstatus.StatusStarting: {
		componentstatus.StatusOK, componentstatus.StatusRecoverableError, componentstatus.StatusPermanentError,
		componentstatus.StatusFatalError, componentstatus.StatusStopping,
	},
	componentstatus.StatusOK: {
		componentstatus.StatusOK, componentstatus.StatusRecoverableError, componentstatus.StatusPermanentError,
		componentstatus.StatusFatalError, componentstatus.StatusStopping,
	},
	componentstatus.StatusRecoverableError: {
		componentstatus.StatusRecoverableError, componentstatus.StatusOK, componentstatus.StatusPermanentError,
		componentstatus.StatusFatalError, componentstatus.StatusStopping,
	},
	componentstatus.StatusPermanentError: {componentstatus.StatusStopping},
	componentstatus.StatusFatalError:     {},
	componentstatus.StatusStopping: {
		componentstatus.StatusRecoverableError, componentstatus.StatusPermanentError,
		componentstatus.StatusFatalError, componentstatus.StatusStopped,
	},
	componentstatus.StatusStopped: {},
}

func validTransition(from, to componentstatus.Status) bool {
	for _, s := range collectorStatusTransitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// statusHost records the status events a receiver reports and holds it to
// the collector's rules: the harness reports Starting and OK around Start
// (as the collector's graph does), and a report the collector would refuse
// fails the test when it ends.
type statusHost struct {
	component.Host
	mu      sync.Mutex
	current componentstatus.Status
	events  []*componentstatus.Event // accepted reports of the receiver, in order
	invalid []string                 // the first few refused transitions
	refused int
}

func newStatusHost(t *testing.T) *statusHost {
	h := &statusHost{Host: componenttest.NewNopHost(), current: componentstatus.StatusNone}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		assert.Zero(t, h.refused, "status reports the collector would refuse, the first ones: %v", h.invalid)
	})
	return h
}

// Report is called by componentstatus.ReportStatus: the receiver's reports.
func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.transition(ev) {
		h.events = append(h.events, ev)
	}
}

// reportByCollector is a status the collector itself reports around Start
// and Shutdown; it counts for the transitions, not for count().
func (h *statusHost) reportByCollector(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.transition(ev)
}

// reportOKIfStarting is what the collector does after a successful Start.
func (h *statusHost) reportOKIfStarting() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current == componentstatus.StatusStarting {
		h.transition(componentstatus.NewEvent(componentstatus.StatusOK))
	}
}

// transition moves to ev's status if the collector allows it, and records
// a violation otherwise (the collector keeps the current status).
func (h *statusHost) transition(ev *componentstatus.Event) bool {
	if !validTransition(h.current, ev.Status()) {
		if h.refused++; h.refused <= 5 {
			h.invalid = append(h.invalid, fmt.Sprintf("%s -> %s (err: %v)", h.current, ev.Status(), ev.Err()))
		}
		return false
	}
	h.current = ev.Status()
	return true
}

// count returns how many events of st the receiver reported, and the last
// one.
func (h *statusHost) count(st componentstatus.Status) (int, *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	var last *componentstatus.Event
	for _, ev := range h.events {
		if ev.Status() == st {
			n++
			last = ev
		}
	}
	return n, last
}

func (h *statusHost) last() componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current
}

// statuses lists the receiver's accepted statuses in order, repeats
// collapsed.
func (h *statusHost) statuses() []componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []componentstatus.Status
	for _, ev := range h.events {
		if len(out) == 0 || out[len(out)-1] != ev.Status() {
			out = append(out, ev.Status())
		}
	}
	return out
}

// TestStatusHostRefusesWhatTheCollectorRefuses checks the test host itself:
// a receiver that reported PermanentError and then OK (what this receiver
// once did after a sidecar rejection) must fail its test.
func TestStatusHostRefusesWhatTheCollectorRefuses(t *testing.T) {
	h := &statusHost{Host: componenttest.NewNopHost(), current: componentstatus.StatusNone}
	for _, st := range []componentstatus.Status{
		componentstatus.StatusStarting, componentstatus.StatusOK,
		componentstatus.StatusRecoverableError, componentstatus.StatusOK,
		componentstatus.StatusPermanentError, componentstatus.StatusOK, componentstatus.StatusRecoverableError,
		componentstatus.StatusStopping, componentstatus.StatusStopped, componentstatus.StatusOK,
	} {
		h.Report(componentstatus.NewEvent(st))
	}
	assert.Equal(t, []string{
		"StatusPermanentError -> StatusOK (err: <nil>)",
		"StatusPermanentError -> StatusRecoverableError (err: <nil>)",
		"StatusStopped -> StatusOK (err: <nil>)",
	}, h.invalid)
	assert.Equal(t, componentstatus.StatusStopped, h.last())
}

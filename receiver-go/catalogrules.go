// The catalog's rules on parameters, checked here at start so that a bad
// value or a map the parameters compile out stops the collector with a
// message naming the field, instead of failing every stream later. They
// repeat the sidecar's own rules, which stay the judge; they live apart
// so that moving them behind a sidecar call removes this file.

package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// checkParameters validates parameter values against the program's typed
// parameter list, the same rules the sidecar applies, so that a bad value
// stops the collector at start instead of failing every stream later.
func checkParameters(p *sidecarpb.Program, i int, values map[string]string) []error {
	byName := map[string]*sidecarpb.Parameter{}
	var valid []string
	for _, par := range p.GetParameters() {
		byName[par.GetName()] = par
		valid = append(valid, par.GetName())
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		v := values[name]
		path := fmt.Sprintf("programs[%d].parameters.%s", i, name)
		par, ok := byName[name]
		if !ok {
			list := strings.Join(valid, ", ")
			if list == "" {
				list = "none"
			}
			errs = append(errs, fmt.Errorf("%s: program %q has no parameter %q; its parameters: %s", path, p.GetName(), name, list))
			continue
		}
		switch par.GetType() {
		case "int":
			n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %q is not an integer; use a whole number in %d..%d", path, v, par.GetMin(), par.GetMax()))
			case n < par.GetMin() || n > par.GetMax():
				errs = append(errs, fmt.Errorf("%s: %d is out of range; use %d..%d", path, n, par.GetMin(), par.GetMax()))
			}
		case "bool":
			if l := strings.ToLower(strings.TrimSpace(v)); l != "true" && l != "false" {
				errs = append(errs, fmt.Errorf("%s: %q is not a boolean; use \"true\" or \"false\"", path, v))
			}
		case "enum":
			if !slices.Contains(par.GetAllowed(), v) {
				errs = append(errs, fmt.Errorf("%s: %q is not one of %s", path, v, strings.Join(par.GetAllowed(), ", ")))
			}
		}
	}
	return errs
}

// mapEnabled tells whether the program's parameters (params over the
// catalog defaults) compile the map in, and which parameter decides.
func mapEnabled(p *sidecarpb.Program, m *sidecarpb.Map, params map[string]string) (bool, string) {
	name := m.GetEnabledBy()
	if name == "" {
		return true, ""
	}
	value, set := params[name]
	if !set {
		for _, par := range p.GetParameters() {
			if par.GetName() == name {
				value, set = par.GetDefault(), true
				break
			}
		}
	}
	if !set {
		return true, name // unknown parameter: leave the verdict to the sidecar
	}
	// The sidecar's own reading of a bool: "true" or "false", any case.
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "false":
		return false, name
	default:
		return true, name // "true", or a bad value the sidecar rejects with its own message
	}
}

// checkEnabled fails a metric whose map the program's parameters compile out.
func checkEnabled(cat *catalog, path string, b *metricBinding, params map[string]map[string]string, programIndex map[string]int) error {
	p := cat.programs[b.program]
	on, par := mapEnabled(p, findMap(p, b.mapName), params[b.program])
	if on {
		return nil
	}
	fix := fmt.Sprintf("add {name: %s, parameters: {%s: \"true\"}} to programs", b.program, par)
	if i, ok := programIndex[b.program]; ok {
		fix = fmt.Sprintf("set programs[%d].parameters.%s to \"true\"", i, par)
	}
	return fmt.Errorf("%s.map_name: map %s/%s exists only when parameter %q of program %q is true, and it is false; %s", path, b.program, b.mapName, par, b.program, fix)
}

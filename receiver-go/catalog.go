package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// catalog indexes a DescribeResponse.
type catalog struct {
	programs map[string]*sidecarpb.Program
	order    []string // program names as the sidecar lists them
}

func newCatalog(desc *sidecarpb.DescribeResponse) *catalog {
	c := &catalog{programs: map[string]*sidecarpb.Program{}}
	for _, p := range desc.GetPrograms() {
		if _, dup := c.programs[p.GetName()]; dup {
			continue
		}
		c.programs[p.GetName()] = p
		c.order = append(c.order, p.GetName())
	}
	return c
}

// usePlanned replaces the maps of each planned program by its maps as the
// judge planned them: sized and laid out for the config's parameter values
// (a latency histogram's slots follow the program's histogram_scale), where
// Describe shows them for the defaults. Maps the parameters compile out keep
// Describe's shape, for error messages.
func (c *catalog) usePlanned(planned []*sidecarpb.PlannedProgram) {
	for _, pp := range planned {
		p := c.programs[pp.GetName()]
		if p == nil || len(pp.GetMaps()) == 0 {
			continue
		}
		q := proto.Clone(p).(*sidecarpb.Program)
		for i, m := range q.GetMaps() {
			for _, pm := range pp.GetMaps() {
				if pm.GetName() == m.GetName() {
					q.Maps[i] = pm
				}
			}
		}
		c.programs[pp.GetName()] = q
	}
}

func (c *catalog) programNames() string {
	if len(c.order) == 0 {
		return "(none: the sidecar's catalog is empty)"
	}
	return strings.Join(c.order, ", ")
}

// mapNames lists every map as program/map.
func (c *catalog) mapNames() string {
	var names []string
	for _, pn := range c.order {
		for _, m := range c.programs[pn].GetMaps() {
			names = append(names, pn+"/"+m.GetName())
		}
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func findMap(p *sidecarpb.Program, name string) *sidecarpb.Map {
	for _, m := range p.GetMaps() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

func findField(fields []*sidecarpb.Field, name string) *sidecarpb.Field {
	for _, f := range fields {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

func fieldNames(fields []*sidecarpb.Field, skip string) string {
	var names []string
	for _, f := range fields {
		if f.GetName() != skip {
			names = append(names, f.GetName())
		}
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func kindName(k sidecarpb.MapKind) string {
	switch k {
	case sidecarpb.MapKind_MAP_KIND_COUNTERS:
		return "counters"
	case sidecarpb.MapKind_MAP_KIND_HISTOGRAM:
		return "histogram"
	default:
		return k.String()
	}
}

// locateMap finds the program owning m.MapName.
func locateMap(cat *catalog, path string, m *MetricConfig) (string, *sidecarpb.Map, error) {
	if m.Program != "" {
		p, ok := cat.programs[m.Program]
		if !ok {
			return "", nil, fmt.Errorf("%s.program: unknown program %q; valid programs: %s", path, m.Program, cat.programNames())
		}
		mp := findMap(p, m.MapName)
		if mp == nil {
			var valid []string
			for _, x := range p.GetMaps() {
				valid = append(valid, x.GetName())
			}
			return "", nil, fmt.Errorf("%s.map_name: program %q has no map %q; its maps: %s", path, m.Program, m.MapName, strings.Join(valid, ", "))
		}
		return m.Program, mp, nil
	}
	var owners []string
	var found *sidecarpb.Map
	for _, pn := range cat.order {
		if mp := findMap(cat.programs[pn], m.MapName); mp != nil {
			owners = append(owners, pn)
			found = mp
		}
	}
	switch len(owners) {
	case 0:
		return "", nil, fmt.Errorf("%s.map_name: no catalog program has a map %q; valid maps (program/map): %s", path, m.MapName, cat.mapNames())
	case 1:
		return owners[0], found, nil
	default:
		return "", nil, fmt.Errorf("%s.map_name: map %q exists in programs %s; set %s.program to one of them", path, m.MapName, strings.Join(owners, ", "), path)
	}
}

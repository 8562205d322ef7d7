package ebpfreceiver // import "github.com/ebpfreceiver/ebpfreceiver/receiver-go"

import (
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

// requestProfiles asks the sidecar for the samples of a stack-sampling
// program as OTLP profiles when the receiver is in a profiles pipeline: the
// first listed program the catalog marks as sampling stacks. In a profiles
// pipeline without one, the config is wrong; a sampling program in a
// receiver that is in no profiles pipeline only gets a warning (its
// metrics still flow, its samples are never read).
func requestProfiles(cfg *Config, desc *sidecarpb.DescribeResponse, req *sidecarpb.StreamRequest, inProfiles bool, logger *zap.Logger, plan judge) error {
	cat := newCatalog(desc)
	var samplers, catalogSamplers []string
	for _, p := range req.GetPrograms() {
		if cat.programs[p.GetName()].GetProfiles() {
			samplers = append(samplers, p.GetName())
		}
	}
	for _, name := range cat.order {
		if cat.programs[name].GetProfiles() {
			catalogSamplers = append(catalogSamplers, name)
		}
	}
	switch {
	case !inProfiles && cfg.ProfilesPerContainer:
		return fmt.Errorf("profiles_per_container: the receiver is in no profiles pipeline; remove the setting or add the receiver to a profiles pipeline")
	case !inProfiles && len(cfg.ProfilesFilter) > 0:
		return fmt.Errorf("profiles_filter: the receiver is in no profiles pipeline; remove the setting or add the receiver to a profiles pipeline")
	case inProfiles && len(samplers) == 0:
		return fmt.Errorf("programs: the receiver is in a profiles pipeline, but none of its programs samples stacks; add one of: %s (e.g. `- name: profile`)",
			strings.Join(catalogSamplers, ", "))
	case inProfiles:
		req.Profiles = &sidecarpb.ProfilesRequest{Program: samplers[0], PerContainer: cfg.ProfilesPerContainer, Cgroups: cfg.ProfilesFilter}
		// The sidecar judges the profiles request too (e.g. a metric bound
		// to the sample map, which profiles clear every interval).
		verdict, err := plan(req)
		if err != nil {
			return err
		}
		var errs []error
		for _, fe := range verdict.GetErrors() {
			field := strings.Replace(fe.GetField(), "profiles.program", "programs ("+samplers[0]+")", 1)
			field = strings.Replace(field, "profiles.cgroups", "profiles_filter", 1)
			errs = append(errs, fmt.Errorf("%s: %s", field, fe.GetMessage()))
		}
		return errors.Join(errs...)
	case len(samplers) > 0:
		logger.Warn("A program samples stacks, but this receiver is in no profiles pipeline: its samples are not read (add the receiver to a profiles pipeline, with the service.profilesSupport feature gate)",
			zap.Strings("programs", samplers))
	}
	return nil
}

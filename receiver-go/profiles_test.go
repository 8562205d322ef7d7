package ebpfreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ebpfreceiver/ebpfreceiver/receiver-go/internal/sidecarpb"
)

func TestRequestProfiles(t *testing.T) {
	desc := &sidecarpb.DescribeResponse{Programs: []*sidecarpb.Program{{Name: "cpu"}, {Name: "profile", Profiles: true}}}
	accept := func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) { return &sidecarpb.PlanResponse{}, nil }
	request := func(names ...string) *sidecarpb.StreamRequest {
		req := &sidecarpb.StreamRequest{}
		for _, n := range names {
			req.Programs = append(req.Programs, &sidecarpb.ProgramRequest{Name: n})
		}
		return req
	}

	req := request("cpu", "profile")
	require.NoError(t, requestProfiles(&Config{ProfilesPerContainer: true}, desc, req, true, zap.NewNop(), accept))
	assert.Equal(t, "profile", req.GetProfiles().GetProgram())
	assert.True(t, req.GetProfiles().GetPerContainer())

	err := requestProfiles(&Config{}, desc, request("cpu"), true, zap.NewNop(), accept)
	require.ErrorContains(t, err, "none of its programs samples stacks; add one of: profile")

	err = requestProfiles(&Config{ProfilesPerContainer: true}, desc, request("profile"), false, zap.NewNop(), accept)
	require.ErrorContains(t, err, "profiles_per_container: the receiver is in no profiles pipeline")
	err = requestProfiles(&Config{ProfilesFilter: []string{"/kubepods.slice"}}, desc, request("profile"), false, zap.NewNop(), accept)
	require.ErrorContains(t, err, "profiles_filter: the receiver is in no profiles pipeline")

	req = request("profile")
	require.NoError(t, requestProfiles(&Config{ProfilesFilter: []string{"/kubepods.slice"}}, desc, req, true, zap.NewNop(), accept))
	assert.Equal(t, []string{"/kubepods.slice"}, req.GetProfiles().GetCgroups())
	badFilter := func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		return &sidecarpb.PlanResponse{Errors: []*sidecarpb.FieldError{{Field: "profiles.cgroups[0]", Message: "'x' is neither"}}}, nil
	}
	err = requestProfiles(&Config{ProfilesFilter: []string{"x"}}, desc, request("profile"), true, zap.NewNop(), badFilter)
	require.ErrorContains(t, err, "profiles_filter[0]: 'x' is neither")

	core, logs := observer.New(zap.WarnLevel)
	req = request("profile")
	require.NoError(t, requestProfiles(&Config{}, desc, req, false, zap.New(core), accept))
	assert.Nil(t, req.GetProfiles())
	assert.Equal(t, 1, logs.FilterMessageSnippet("in no profiles pipeline").Len())

	refuse := func(*sidecarpb.StreamRequest) (*sidecarpb.PlanResponse, error) {
		return &sidecarpb.PlanResponse{Errors: []*sidecarpb.FieldError{{Field: "profiles.program", Message: "bind no metric to it"}}}, nil
	}
	err = requestProfiles(&Config{}, desc, request("profile"), true, zap.NewNop(), refuse)
	require.ErrorContains(t, err, "programs (profile): bind no metric to it")
}

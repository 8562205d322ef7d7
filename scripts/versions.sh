# Pinned tool versions, shared by setup.sh, the Makefile and the Dockerfile.
# Keep every collector module at one release: core v0.165.0 / v1.71.0 goes
# with contrib v0.165.x (see collector-config/builder-config.yaml).
OCB_VERSION=v0.165.0
# mdatagen generates receiver-go/internal/metadata, the component tests and
# documentation.md from receiver-go/metadata.yaml (scripts/gen-metadata.sh).
# v0.159.0 rather than v0.165.0: the Go module proxy serves no
# cmd/mdatagen v0.160.0 or v0.162.0..v0.165.x, and v0.161.0 needs an
# internal/schemagen v0.161.0 it does not serve either. The generated code
# builds against the pinned core (v1.71.0 / v0.165.0) like the rest of
# receiver-go; move to the core release once the proxy has it.
MDATAGEN_VERSION=v0.159.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# Helm, for the chart under deploy/helm (helm lint / helm template in make test).
HELM_VERSION=v3.22.0
# The dashboards are generated with Grafana's Foundation SDK (deploy/grafana,
# pinned in sidecar/requirements.txt); promtool and prometheus come from
# Debian's `prometheus` package (scripts/setup.sh ops).
# pprof's profile.proto (github.com/google/pprof, a Go module without releases):
# the sidecar's flame graph command writes pprof files with the Python code
# scripts/gen-proto.sh generates from it, for `go tool pprof -http`.
PPROF_VERSION=v0.0.0-20260906184651-6331bc6350fe
# The peers bench/overhead.py compares the catalog with (bench/setup.sh only):
# BCC's own tools at the version of the python3-bpfcc the sidecar uses, and
# bpftrace; both Debian bookworm's.
BPFCC_TOOLS_DEB_VERSION=0.26.0+ds-1
BPFTRACE_DEB_VERSION=0.17.0-1

# Pinned tool versions, shared by setup.sh, the Makefile and the Dockerfile.
# Keep every collector module at one release: core v0.165.0 / v1.71.0 goes
# with contrib v0.165.x (see collector-config/builder-config.yaml).
OCB_VERSION=v0.165.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

#!/usr/bin/env bash
# Generates the Go and Python code of proto/ with one protoc (grpcio-tools'
# bundled protoc, which also drives the pinned Go plugins).
#
#   scripts/gen-proto.sh [OUT_ROOT]
# OUT_ROOT defaults to the repository; the freshness test passes a temporary
# folder and compares.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT}
PY=$ROOT/.venv/bin/python
GO_OUT=$OUT/receiver-go/internal/sidecarpb
PY_OUT=$OUT/sidecar/src
mkdir -p "$GO_OUT" "$PY_OUT"
cd "$ROOT/proto"
PROTOS=$(find . -name '*.proto' | sed 's|^\./||' | sort)
WKT=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
# shellcheck disable=SC2086
"$PY" -m grpc_tools.protoc -I . -I "$WKT" \
  --plugin=protoc-gen-go="$ROOT/.tools/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$ROOT/.tools/protoc-gen-go-grpc" \
  --go_out="$GO_OUT" --go_opt=paths=source_relative \
  --go-grpc_out="$GO_OUT" --go-grpc_opt=paths=source_relative \
  --python_out="$PY_OUT" --pyi_out="$PY_OUT" --grpc_python_out="$PY_OUT" \
  $PROTOS
# Go code lands in the package folder, not in a mirror of the proto path.
find "$GO_OUT" -mindepth 1 -name '*.go' -path '*/ebpfreceiver/*' -exec mv -f {} "$GO_OUT/" \;
rm -rf "$GO_OUT/ebpfreceiver"
# Python packages for every level of the proto path.
d=$PY_OUT/ebpfreceiver
while [ -d "$d" ]; do
  [ -f "$d/__init__.py" ] || : >"$d/__init__.py"
  next=$(find "$d" -mindepth 1 -maxdepth 1 -type d ! -name __pycache__ | head -n1)
  [ -n "$next" ] || break
  d=$next
done
# pprof's profile.proto, Python only (the flame graph command writes pprof
# files): from the pinned module in Go's module cache (scripts/setup.sh tools
# downloads it), staged under its proto package so that the code imports as
# perftools.profiles.profile_pb2.
. "$ROOT/scripts/versions.sh"
stage=$(mktemp -d)
mkdir -p "$stage/perftools/profiles"
cp "$(go env GOMODCACHE)/github.com/google/pprof@$PPROF_VERSION/proto/profile.proto" "$stage/perftools/profiles/"
chmod u+w "$stage/perftools/profiles/profile.proto"
"$PY" -m grpc_tools.protoc -I "$stage" --python_out="$PY_OUT" --pyi_out="$PY_OUT" perftools/profiles/profile.proto
rm -rf "$stage"
for d in "$PY_OUT/perftools" "$PY_OUT/perftools/profiles"; do
  [ -f "$d/__init__.py" ] || : >"$d/__init__.py"
done

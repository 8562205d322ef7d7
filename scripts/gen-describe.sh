#!/usr/bin/env bash
# Writes the sidecar's Describe response for the repository's catalog (bpf/
# and examples/programs/, as docs/own-programs.md runs it) to
# receiver-go/testdata/catalog/describe.json, and the judge's (Plan's)
# verdicts on each program's bool parameters to verdicts.json. The
# receiver's tests resolve every shipped YAML example against them; no
# kernel is needed.
#
#   scripts/gen-describe.sh [OUT_ROOT]
# OUT_ROOT defaults to the repository; the freshness test passes a temporary
# folder and compares.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT}
"$ROOT/.venv/bin/python" -m ebpf_sidecar.describe_fixture \
  "$OUT/receiver-go/testdata/catalog/describe.json" \
  --verdicts "$OUT/receiver-go/testdata/catalog/verdicts.json" \
  --catalog "$ROOT/bpf" --programs-dir "$ROOT/examples/programs"

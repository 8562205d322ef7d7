#!/usr/bin/env bash
# Generates what mdatagen derives from receiver-go/metadata.yaml: the status
# constants and self-telemetry instruments (internal/metadata), their test
# helpers (internal/metadatatest), the component and lifecycle tests
# (generated_*_test.go) and documentation.md. Generated files no longer
# generated (a section removed from metadata.yaml) are removed.
#
#   scripts/gen-metadata.sh [OUT_ROOT]
# OUT_ROOT defaults to the repository; the freshness test passes a temporary
# folder, into which receiver-go is copied and regenerated, and compares.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT}
MDATAGEN=$ROOT/.tools/mdatagen
[ -x "$MDATAGEN" ] || { echo "gen-metadata: $MDATAGEN is missing: run 'scripts/setup.sh tools'" >&2; exit 1; }

DIR=$OUT/receiver-go
if [ "$OUT" != "$ROOT" ]; then
  mkdir -p "$OUT"
  rm -rf "$DIR"
  cp -R "$ROOT/receiver-go" "$DIR"
fi

# Everything mdatagen writes, so that nothing stale survives a regeneration.
rm -rf "$DIR/internal/metadata" "$DIR/internal/metadatatest" "$DIR/documentation.md"
find "$DIR" -maxdepth 1 -name 'generated_*.go' -delete

# mdatagen names the package of the root-level files it writes after the
# folder, and "receiver-go" is no Go identifier: run it through a link
# named after the package. (It finds the module through the link, and
# writes through it into receiver-go.)
ALIAS=$(mktemp -d)
trap 'rm -rf "$ALIAS"' EXIT
ln -s "$DIR" "$ALIAS/ebpfreceiver"
(cd "$ALIAS/ebpfreceiver" && "$MDATAGEN" metadata.yaml)
# mdatagen writes 0600 files and 0700 folders; give them the modes git
# checks out.
chmod -R u+rwX,go+rX "$DIR/internal/metadata" "$DIR/internal/metadatatest" "$DIR/documentation.md" "$DIR"/generated_*.go

#!/usr/bin/env bash
# The main job: the sidecar (restarted if it dies) and the collector with
# CONFIG (default collector-config/default.yaml), until Ctrl-C. Stopping
# detaches every BPF program: the sidecar cleans up on SIGTERM.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CONFIG=${CONFIG:-collector-config/default.yaml}
SOCKET=${SIDECAR_SOCKET:-/run/ebpf-sidecar/sidecar.sock}
COLLECTOR=$ROOT/build/otelcol-ebpf/otelcol-ebpf

if [ "$(id -u)" -ne 0 ]; then
  echo "make run needs root (the sidecar needs CAP_BPF + CAP_PERFMON to load programs)" >&2
  exit 1
fi
[ -f "$CONFIG" ] || { echo "CONFIG=$CONFIG does not exist" >&2; exit 1; }

# Keeps the sidecar running: a crash or a SIGKILL is followed by a restart
# within a second; the receiver reconnects by itself.
supervise_sidecar() {
  local child=
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
  while true; do
    "$ROOT/.venv/bin/python" -m ebpf_sidecar --listen "unix://$SOCKET" &
    child=$!
    wait "$child" && status=0 || status=$?
    echo "[run] sidecar exited with status $status; restarting in 1s" >&2
    sleep 1
  done
}

supervise_sidecar &
SUPERVISOR=$!
"$COLLECTOR" --config "$CONFIG" &
COLLECTOR_PID=$!

stop() {
  trap - INT TERM
  echo "[run] stopping collector and sidecar" >&2
  kill -TERM "$COLLECTOR_PID" 2>/dev/null || true
  kill -TERM "$SUPERVISOR" 2>/dev/null || true
  wait "$COLLECTOR_PID" 2>/dev/null || true
  wait "$SUPERVISOR" 2>/dev/null || true
  echo "[run] stopped; no BPF programs are left loaded by the sidecar" >&2
}
trap 'stop; exit 0' INT TERM

cat >&2 <<MSG
[run] sidecar: unix://$SOCKET   collector config: $CONFIG
[run] metrics: $(grep -Eo 'endpoint: *"?[0-9.]+:[0-9]+' "$CONFIG" | head -n1 | sed -E 's/endpoint: *"?/http:\/\//')/metrics (Prometheus text; first data after one collection interval)
[run] Ctrl-C stops both.
MSG

# Either process ending on its own ends the job (the sidecar never does: it is restarted).
wait -n "$COLLECTOR_PID" "$SUPERVISOR" || true
stop

#!/usr/bin/env bash
# The main job: the sidecar (restarted if it dies) and, once the sidecar
# answers, the collector with CONFIG (default collector-config/default.yaml),
# until Ctrl-C. Stopping detaches every BPF program: the sidecar cleans up on
# SIGTERM. A collector that stops with an error (a config that does not match
# the catalog, a port in use) ends the job with its status and its error as
# the last lines.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CONFIG=${CONFIG:-collector-config/default.yaml}
SOCKET=${SIDECAR_SOCKET:-/run/ebpf-sidecar/sidecar.sock}
# How long the sidecar may take to answer (catalog loaded, socket listening).
SIDECAR_START_TIMEOUT=${SIDECAR_START_TIMEOUT:-60}
COLLECTOR=$ROOT/build/otelcol-ebpf/otelcol-ebpf
PYTHON=$ROOT/.venv/bin/python
LOGDIR=$ROOT/build/run
COLLECTOR_LOG=$LOGDIR/collector.log

say() { echo "[run] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "make run needs root (the sidecar needs CAP_BPF + CAP_PERFMON to load programs)"
  exit 1
fi
[ -f "$CONFIG" ] || { say "CONFIG=$CONFIG does not exist"; exit 1; }
mkdir -p "$LOGDIR"

# Keeps the sidecar running: a crash or a SIGKILL is followed by a restart
# within a second; the receiver reconnects by itself.
# This run's sidecar pid, for stop() (several run.sh may run with their own sockets).
SIDECAR_PIDFILE=$(mktemp "${TMPDIR:-/tmp}/ebpf-sidecar-pid.XXXXXX")

# Keeps the sidecar running: a crash or a SIGKILL is followed by a restart
# within a second; the receiver reconnects by itself. This shell runs in the
# background, where bash ignores SIGINT (and ignores a trap on it): Ctrl-C
# reaches the sidecar directly, and stop() ends this loop with TERM.
# What the config needs of the sidecar, e.g. CAP_SYS_PTRACE to symbolize
# the user stacks of a profiles pipeline.
mapfile -t SIDECAR_FLAGS < <("$PYTHON" scripts/config-flags.py sidecar "$CONFIG")

supervise_sidecar() {
  local child=
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; exit 0' TERM
  while true; do
    "$PYTHON" -m ebpf_sidecar --listen "unix://$SOCKET" "${SIDECAR_FLAGS[@]}" &
    child=$!
    echo "$child" >"$SIDECAR_PIDFILE"
    wait "$child" && status=0 || status=$?
    say "sidecar exited with status $status; restarting in 1s"
    sleep 1
  done
}

# Whether the sidecar process is still there (a zombie has stopped).
sidecar_running() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

SUPERVISOR=
COLLECTOR_PID=
stop() {
  trap - INT TERM
  say "stopping collector and sidecar"
  [ -z "$COLLECTOR_PID" ] || kill -TERM "$COLLECTOR_PID" 2>/dev/null || true
  [ -z "$SUPERVISOR" ] || kill -TERM "$SUPERVISOR" 2>/dev/null || true
  [ -z "$COLLECTOR_PID" ] || wait "$COLLECTOR_PID" 2>/dev/null || true
  [ -z "$SUPERVISOR" ] || wait "$SUPERVISOR" 2>/dev/null || true
  # The sidecar detaches and unpins its programs on TERM (about a second);
  # the job ends when it has, not when its supervisor has.
  local sidecar waited=0
  sidecar=$(cat "$SIDECAR_PIDFILE" 2>/dev/null || true)
  while [ -n "$sidecar" ] && sidecar_running "$sidecar" && [ "$waited" -lt 300 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$SIDECAR_PIDFILE"
  say "stopped; no BPF programs are left loaded by the sidecar"
}
trap 'stop; exit 0' INT TERM

supervise_sidecar &
SUPERVISOR=$!

# The collector starts once the sidecar answers, so that the receiver's
# first Describe checks the config against the catalog and a mismatch stops
# the collector at start instead of being retried in the background.
say "waiting for the sidecar on unix://$SOCKET"
deadline=$((SECONDS + SIDECAR_START_TIMEOUT))
until "$PYTHON" -m ebpf_sidecar.probe --endpoint "unix://$SOCKET" --wait 2 >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    stop
    say "the sidecar did not answer on unix://$SOCKET within ${SIDECAR_START_TIMEOUT}s; its log is above"
    exit 1
  fi
  sleep 0.2
done

cat >&2 <<MSG
[run] sidecar: unix://$SOCKET   collector config: $CONFIG
[run] metrics: $(grep -Eo 'endpoint: *"?[0-9.]+:[0-9]+' "$CONFIG" | head -n1 | sed -E 's/endpoint: *"?/http:\/\//')/metrics (Prometheus text; first data after one collection interval)
[run] Ctrl-C stops both.
MSG

# The collector's log goes to the terminal and to a file, to repeat its
# error last if it stops with one.
# Flags the config needs, e.g. the profiles feature gate for a profiles pipeline.
mapfile -t FLAGS < <("$PYTHON" scripts/config-flags.py collector "$CONFIG")
"$COLLECTOR" --config "$CONFIG" "${FLAGS[@]}" 2> >(tee "$COLLECTOR_LOG" >&2) &
COLLECTOR_PID=$!

# Either process ending on its own ends the job (the sidecar never does: it is restarted).
wait -n -p ended "$COLLECTOR_PID" "$SUPERVISOR" && status=0 || status=$?
if [ "${ended:-}" = "$COLLECTOR_PID" ]; then
  COLLECTOR_PID=
  stop
  if [ "$status" -ne 0 ]; then
    sleep 0.2  # let tee write the last lines
    say "the collector exited with status $status (full log: $COLLECTOR_LOG):"
    grep -E '^Error:' "$COLLECTOR_LOG" >&2 || tail -n 5 "$COLLECTOR_LOG" >&2
    exit "$status"
  fi
  exit 0
fi
stop

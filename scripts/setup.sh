#!/usr/bin/env bash
# Installs whatever is missing for `make run` and `make test`; quick and silent
# when nothing is. The Makefile, the Dockerfile and CI all call this script, so
# every install step is exercised by every path.
#
#   scripts/setup.sh [system|python|tools|collector|ops|headers|all]...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
DEB_PACKAGES=(
  python3-bpfcc   # BCC and its Python binding (PyPI has no real one)
  libbpf1         # the sidecar reads maps with libbpf, loading BCC (LLVM) only in loader processes
  python3-cap-ng  # libcap-ng's binding: the sidecar drops capabilities once started
  python3-venv    # virtualenv over the system Python, so `import bcc` works
  bpftool         # tests check that no program is left loaded
  linux-headers-amd64  # BCC compiles against them when the kernel ships none
  nftables        # packet loss for TCP retransmit tests
  iproute2        # network namespaces for tests
  util-linux      # losetup, unshare, setpriv for disk and privilege tests
  e2fsprogs       # mkfs.ext4: the buffered-write attribution test formats a loop device
  gcc libc6-dev   # the profile tests build C programs with frame pointers
  ca-certificates
)

# install_debs installs those of its Debian packages that are missing; it
# returns 1 (and installs nothing) when none is.
install_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 1
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_system() {
  install_debs "${DEB_PACKAGES[@]}" || true
  link_kernel_headers
}

# BCC looks for headers under /lib/modules/$(uname -r)/{build,source}. Kernels
# without a headers package (ours, many cloud kernels) get Debian's generic
# ones; the running kernel's BTF stays the authority for struct layouts.
# HOST_ROOT (the sidecar image's start, scripts/sidecar-entrypoint.sh) is where
# the node's / is mounted read-only: the node's own headers for its kernel are
# linked when it has them, the image's generic ones otherwise; the image's own
# /usr/src is never hidden by a mount.
link_kernel_headers() {
  local rel dir hdr common host=${HOST_ROOT:-} target
  rel=$(uname -r)
  dir=${MODULES_DIR:-/lib/modules}/$rel
  if [ -e "$dir/build/include" ] || [ -e /sys/kernel/kheaders.tar.xz ]; then
    return 0
  fi
  if [ -n "$host" ]; then
    local sub
    for sub in build source; do
      # The node's link is absolute (/usr/src/linux-headers-...): resolve it
      # under the node's root, not the image's.
      target=$(readlink "$host/lib/modules/$rel/$sub" 2>/dev/null || true)
      case $target in /*) target=$host$target ;; ?*) target=$host/lib/modules/$rel/$target ;; esac
      if [ -n "$target" ] && [ -e "$target/include" -o -e "$target/Makefile" ]; then
        log "linking $dir/$sub -> $target (the node's headers)"
        mkdir -p "$dir"
        ln -sfn "$target" "$dir/$sub"
      fi
    done
    [ -e "$dir/build/include" ] && return 0
  fi
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$hdr" ] || [ -z "$common" ]; then
    log "no kernel headers found under /usr/src; install linux-headers-amd64"
    return 1
  fi
  log "linking $dir/build -> $hdr and $dir/source -> $common"
  mkdir -p "$dir"
  ln -sfn "$hdr" "$dir/build"
  ln -sfn "$common" "$dir/source"
}

# --- operators' tools: Prometheus, promtool and Helm --------------------------
# Debian's prometheus brings promtool (`promtool test rules` on deploy/prometheus)
# and the server tests/test_dashboards.py runs against the real collector, on a
# port and storage of its own. Where installing it started Debian's service
# (a machine running systemd), that service is stopped and disabled again.
OPS_DEB_PACKAGES=(prometheus)

setup_ops() {
  if install_debs "${OPS_DEB_PACKAGES[@]}" && [ -d /run/systemd/system ] &&
     systemctl is-active --quiet prometheus 2>/dev/null; then
    log "stopping and disabling the prometheus service the package started (only its binaries are needed)"
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  mkdir -p "$ROOT/.tools"
  install_go_tool "$ROOT/.tools/helm" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# --- Python environment ------------------------------------------------------
setup_python() {
  local venv=$ROOT/.venv stamp=$ROOT/.venv/.requirements.sha
  local want
  want=$(sha256sum sidecar/requirements.txt sidecar/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "creating Python environment in .venv (system site-packages for BCC)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r sidecar/requirements.txt
  # The sidecar is used in place: a .pth file puts sidecar/src on the path.
  "$venv/bin/python" -c "import site, sys; open(site.getsitepackages()[0] + '/ebpf_sidecar.pth', 'w').write(sys.argv[1] + '\\n')" "$ROOT/sidecar/src"
  "$venv/bin/python" -c 'import bcc, capng, grpc, yaml' || { log "Python environment is incomplete"; return 1; }
  echo "$want" >"$stamp"
}

# --- Go tools ----------------------------------------------------------------
setup_tools() {
  mkdir -p "$ROOT/.tools"
  local bin=$ROOT/.tools
  install_go_tool "$bin/builder" "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
  install_go_tool "$bin/protoc-gen-go" "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  install_go_tool "$bin/protoc-gen-go-grpc" "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  build_go_tool "$bin/mdatagen" "go.opentelemetry.io/collector/cmd/mdatagen@$MDATAGEN_VERSION"
  # profile.proto, for scripts/gen-proto.sh (into the module cache; cached)
  go mod download "github.com/google/pprof@$PPROF_VERSION"
}

install_go_tool() {
  local path=$1 pkg=$2 stamp=$1.version
  if [ -x "$path" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return 0; fi
  log "go install $pkg"
  GOBIN=$(dirname "$path") GOFLAGS=-buildvcs=false go install "$pkg"
  echo "$pkg" >"$stamp"
}

# build_go_tool builds a tool that `go install pkg@version` refuses: mdatagen's
# go.mod has replace directives (its repository's own modules), which go
# install rejects, and the module proxy lists no versions of it, which go
# install needs for its deprecation check. Required as a dependency of a
# throwaway module instead, its replace directives do not apply and its
# requirements resolve as released (minimal version selection, so the same
# versions every time).
build_go_tool() {
  local path=$1 pkg=$2 stamp=$1.version mod out
  if [ -x "$path" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return 0; fi
  log "go build $pkg"
  mod=$(mktemp -d)
  if ! out=$(cd "$mod" && go mod init local/tool 2>&1 &&
      GOFLAGS=-buildvcs=false go get "$pkg" 2>&1 &&
      GOFLAGS=-buildvcs=false go build -o "$path" "${pkg%@*}" 2>&1); then
    printf '%s\n' "$out" >&2
    rm -rf "$mod"
    log "could not build $pkg"
    return 1
  fi
  rm -rf "$mod"
  echo "$pkg" >"$stamp"
}

# --- the ocb-built collector -------------------------------------------------
setup_collector() {
  setup_tools
  local out=$ROOT/build/otelcol-ebpf/otelcol-ebpf
  # Rebuild only when an input is newer than the binary.
  if [ -x "$out" ] && [ -z "$(find collector-config/builder-config.yaml receiver-go -newer "$out" -type f -print -quit)" ]; then
    return 0
  fi
  log "building the collector with ocb $OCB_VERSION (first build takes a few minutes)"
  mkdir -p "$ROOT/build"
  (cd collector-config && GOFLAGS=-buildvcs=false "$ROOT/.tools/builder" --config builder-config.yaml >"$ROOT/build/ocb.log" 2>&1) || {
    tail -n 40 "$ROOT/build/ocb.log" >&2
    log "ocb build failed; full log in build/ocb.log"
    return 1
  }
  touch "$out"
}

main() {
  [ $# -gt 0 ] || set -- all
  for step in "$@"; do
    case $step in
      system) setup_system ;;
      python) setup_python ;;
      tools) setup_tools ;;
      collector) setup_collector ;;
      ops) setup_ops ;;
      # the sidecar image's start: link the node's kernel headers, install nothing
      headers) link_kernel_headers ;;
      all) setup_system; setup_python; setup_tools; setup_collector; setup_ops ;;
      *) log "unknown step $step"; exit 2 ;;
    esac
  done
}

main "$@"

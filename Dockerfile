# Two images from one file; every step calls the scripts that `make setup`
# and CI run, so the steps here are exercised even where no Docker engine is.
#
#   docker build --target collector -t otelcol-ebpf .
#   docker build --target sidecar   -t ebpf-sidecar .

# --- the ocb-built collector (unprivileged) -------------------------------------
FROM golang:1.26-bookworm AS collector-build
WORKDIR /src
COPY scripts/ scripts/
COPY collector-config/ collector-config/
COPY receiver-go/ receiver-go/
RUN scripts/setup.sh tools collector

FROM debian:bookworm-slim AS collector
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=collector-build /src/build/otelcol-ebpf/otelcol-ebpf /otelcol-ebpf
COPY collector-config/default.yaml /etc/otelcol-ebpf/config.yaml
USER 10001
ENTRYPOINT ["/otelcol-ebpf"]
CMD ["--config", "/etc/otelcol-ebpf/config.yaml"]

# --- the sidecar (CAP_BPF + CAP_PERFMON, hostPID, /sys/kernel/tracing) ----------
FROM debian:bookworm AS sidecar
WORKDIR /opt/ebpf
COPY scripts/ scripts/
COPY sidecar/ sidecar/
COPY bpf/ bpf/
# Debian's BCC and generic kernel headers, then the pinned Python environment.
# Nothing is installed at start: the entrypoint only links headers for the
# node's kernel (the node's own from /host when it has them, else the image's;
# scripts/sidecar-entrypoint.sh, exercised by tests/test_images.py).
RUN scripts/setup.sh system python && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["scripts/sidecar-entrypoint.sh"]
CMD ["--listen", "unix:///run/ebpf-sidecar/sidecar.sock"]

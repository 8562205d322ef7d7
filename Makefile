# The two commands a new user needs: `make run` and `make test`.
# Both set up whatever is missing first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
CONFIG ?= collector-config/default.yaml

.PHONY: run test setup proto generate dashboards collector lint unit e2e fuzz bench flamegraph clean

run: setup
	CONFIG=$(CONFIG) scripts/run.sh

test: setup
	scripts/test.sh

setup:
	scripts/setup.sh all

# Regenerate the Go and Python code of proto/ (checked for freshness by `make test`).
proto:
	scripts/setup.sh python tools
	scripts/gen-proto.sh

# Regenerate everything generated: the proto code, the catalog's Describe
# response the receiver's tests resolve the shipped examples against
# (receiver-go/testdata/catalog/describe.json), and what mdatagen derives
# from receiver-go/metadata.yaml (internal/metadata, the component tests,
# documentation.md), and what deploy/ derives (the dashboards, the rendered
# manifest). All checked by `make test`.
generate: proto dashboards
	scripts/gen-describe.sh
	scripts/gen-metadata.sh

# The Grafana dashboards, generated with Grafana's Foundation SDK from
# deploy/grafana/generate.py into deploy/grafana/*.json, and
# deploy/kubernetes/daemonset.yaml rendered from the Helm chart.
dashboards:
	scripts/setup.sh python ops
	scripts/gen-deploy.sh

collector:
	scripts/setup.sh collector

lint: setup
	scripts/test.sh lint

unit: setup
	scripts/test.sh unit

e2e: setup
	scripts/test.sh e2e

# Longer fuzzing than make test's 30000 inputs per target: Go's targets and
# the sidecar's property tests.
fuzz: setup
	FUZZTIME=$${FUZZTIME:-5m} scripts/test.sh fuzz
	cd sidecar && HYPOTHESIS_PROFILE=long ../.venv/bin/python -m pytest -q tests -k 'property or fuzz'

# The benchmarks `make bench` runs one after the other, each printing its
# tables (numbers and commands in docs/overhead.md): add further bench/*.py
# scripts here. BENCH_ARGS is passed to each (e.g. BENCH_ARGS=--quick).
BENCH_SCRIPTS := bench/overhead.py bench/snapshot.py bench/map_walk.py bench/sidecar_startup.py bench/barrier.py

bench: setup
	set -e; for script in $(BENCH_SCRIPTS); do .venv/bin/python $$script $(BENCH_ARGS); done

# A flame graph of DURATION seconds (default 30) of the node, of one process
# (PID=1234) or of one container (CONTAINER=<id or prefix>), from the sidecar
# `make run` started (SIDECAR_SOCKET to use another), at FREQUENCY_HZ (default
# 99): written to build/cpu.pb.gz and opened in pprof's web UI (VIEW > Flame
# graph) on PPROF_HTTP (default 127.0.0.1:8080). See docs/profiles.md.
flamegraph:
	mkdir -p build
	.venv/bin/python -m ebpf_sidecar.flamegraph --endpoint unix://$(or $(SIDECAR_SOCKET),/run/ebpf-sidecar/sidecar.sock) \
	  --seconds $(or $(DURATION),30) --frequency-hz $(or $(FREQUENCY_HZ),99) \
	  $(if $(PID),--pid $(PID)) $(if $(CONTAINER),--container $(CONTAINER)) -o build/cpu.pb.gz
	go tool pprof -http=$(or $(PPROF_HTTP),127.0.0.1:8080) build/cpu.pb.gz

clean:
	rm -rf build .tools .venv

# The two commands a new user needs: `make run` and `make test`.
# Both set up whatever is missing first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
CONFIG ?= collector-config/default.yaml

.PHONY: run test setup proto generate dashboards collector lint unit e2e fuzz bench clean

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

# Longer fuzzing than make test's few seconds per target: Go's targets and
# the sidecar's property tests.
fuzz: setup
	FUZZTIME=$${FUZZTIME:-5m} scripts/test.sh fuzz
	cd sidecar && HYPOTHESIS_PROFILE=long ../.venv/bin/python -m pytest -q tests -k 'property or fuzz'

bench: setup
	.venv/bin/python bench/overhead.py

clean:
	rm -rf build .tools .venv

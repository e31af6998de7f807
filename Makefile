# The two commands a fresh machine needs (Python 3.11+, Node.js for Azurite):
#   make demo   synthesise data, train, publish a model to a local store, serve it and show its forecasts
#   make test   lint, type-check and run the whole test suite (starts Azurite itself)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cluster test lint typecheck pytest install tools load-tools clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# checkov pins its dependencies tightly (packaging<24, …): it gets a venv of its own.
.tools/checkov/bin/checkov:
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet --upgrade pip
	.tools/checkov/bin/python -m pip install --quiet checkov

tools: .tools/checkov/bin/checkov

# The serving benchmark's load generators, from Debian (its smoke test runs both).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
load-tools:
	command -v hey >/dev/null && command -v wrk >/dev/null || { $(SUDO) apt-get update -qq \
		&& $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey wrk >/dev/null; }

node_modules/.bin/azurite-blob:
	npm install --no-save --no-audit --no-fund --loglevel=error azurite

demo: $(STAMP)
	$(BIN)/forecast demo

# The operator and a blue/green rollout on the cluster KUBECONFIG names (kind, k3d, minikube).
demo-cluster: $(STAMP)
	$(BIN)/forecast demo-cluster

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees retail_forecast through a link tree: training/, inference/ and operator/ are mapped into
# the package by setuptools, and checked as what they are (retail_forecast.*), never as top-level modules.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/retail_forecast
	for entry in retail_forecast/*; do ln -s "$$PWD/$$entry" build/typecheck/retail_forecast/; done
	ln -s "$$PWD/training" build/typecheck/retail_forecast/training
	ln -s "$$PWD/inference" build/typecheck/retail_forecast/inference
	ln -s "$$PWD/operator/src" build/typecheck/retail_forecast/operator
	$(BIN)/mypy -p retail_forecast
	$(BIN)/mypy tests
	$(BIN)/mypy benchmarks

pytest: $(STAMP) node_modules/.bin/azurite-blob .tools/checkov/bin/checkov load-tools
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf build out .mypy_cache .pytest_cache .ruff_cache

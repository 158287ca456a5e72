# Two commands on a fresh machine:
#   make run    set up .venv (if missing or stale) and run the default workflow
#   make test   set up .venv and run lint + the test suite
# The environment comes from requirements.lock (every package pinned with ==); torch is
# installed first, on its own, so pip takes the local CPU build instead of a CUDA download.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := $(shell grep '^torch==' requirements.lock)
PIP_VERSION := 26.3
CORES ?= all
export PATH := $(BIN):$(PATH)

.PHONY: run test lint setup dry-run clean-results

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

dry-run: $(STAMP)
	$(BIN)/snakemake -n
	$(BIN)/snakemake -n --configfile configs/paper.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/python -m pytest

clean-results:
	rm -rf results/corpus results/data results/models results/pretrain results/runs results/logs results/tables \
		results/figures results/claims.json results/claims.md .snakemake

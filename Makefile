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
SRC := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))src
export PATH := $(BIN):$(PATH)

.PHONY: run test lint setup libaio dry-run clean-results docker-test slurm-test

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(MAKE) --no-print-directory libaio
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m offloadbench.ops
	touch $(STAMP)

# DeepSpeed's async_io op (NVMe offload) compiles against libaio; install it where we can.
libaio:
	@if dpkg -s libaio-dev >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libaio-dev; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq libaio-dev; \
	else echo "warning: libaio-dev is missing and cannot be installed without root; NVMe offload runs will fail" >&2; fi

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

dry-run: $(STAMP)
	$(BIN)/snakemake -n
	$(BIN)/snakemake -n --configfile configs/paper.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/python -m pytest

# Removes only what the workflow wrote (src/offloadbench/owned.py): results/<step>/ folders, the
# claims and report files, .snakemake, and NVMe swap folders that carry the run's marker. The
# user's own files in results/, results/reference/ and the folders named as nvme_dir stay.
clean-results:
	PYTHONPATH=$(SRC) $(PYTHON) -m offloadbench.owned results

# Builds the Dockerfile for real on a Debian base made with debootstrap (no GPU, no Docker Hub) and
# runs the default profile in the image as the README tells reviewers; needs root. Too heavy for CI.
docker-test:
	bash tools/docker_test.sh

# The tiny profile through workflow/profiles/slurm on a real Slurm (a local one from Debian's
# slurm-wlm and munge when none answers; needs root), and locally, with the results compared
# (docs/cluster.md). ARGS=--two-nodes: a two-node run instead. The environment is set up first only
# when $(BIN) has no snakemake: `make slurm-test BIN=<env>/bin` uses another checkout's. Not in CI.
slurm-test: $(if $(wildcard $(BIN)/snakemake),,$(STAMP))
	BIN=$(BIN) bash tools/slurm_test.sh $(ARGS)

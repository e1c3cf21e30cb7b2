# Tasker build entry points. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV     := .venv
PY       := $(VENV)/bin/python
BUF      := tools/node_modules/.bin/buf
TEST_ENV := scripts/test-env.sh
LISTEN   ?= 127.0.0.1:50051

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export DEBIAN_FRONTEND := noninteractive

# Install stamps: re-run an install step only when its inputs change.
VENV_STAMP  := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-runtime
TOOLS_STAMP := tools/node_modules/.installed
NODE_STAMP  := sdk-node/node_modules/.installed

.PHONY: help install install-system gen check-gen lint breaking test test-python test-node build-node \
        test-ruby run bench chaos soak fuzz clean

help:
	@echo "make install-system  apt packages (Ruby, grpc tools, PostgreSQL if absent); idempotent, root"
	@echo "make install         .venv (server + sdk-python, editable, dev extra) and npm ci for tools/, sdk-node/"
	@echo "make gen             regenerate Python, Node and Ruby code from proto/"
	@echo "make check-gen       gen, then fail if the committed generated code is stale"
	@echo "make lint            buf lint, ruff check, mypy"
	@echo "make breaking        buf breaking against the main branch (skipped if there is none)"
	@echo "make test            everything CI runs: install-system install check-gen lint breaking + all tests"
	@echo "make run             serve on $(LISTEN) with the default SQLite database"
	@echo "make bench           python -m bench"
	@echo "make chaos           python -m chaos: faults under load (~4 min), tables in docs/"
	@echo "make soak            python -m chaos.soak: 30 min at half the measured throughput (SOAK_ARGS=--minutes 2)"
	@echo "make fuzz            hostile requests to every RPC of a fresh server (SEED=, CASES=10000)"
	@echo "make clean           remove .venv, node_modules, build output and caches"

# ---------------------------------------------------------------- install
install-system:
	bash scripts/install-system.sh

# Runtime only (what `make run` needs), then the development extras on top.
# Fast path for `make run` on a fresh clone (~24 s instead of ~31 s): when the interpreter's own
# pip can install into another environment (pip >= 22.3, --python), the venv is created without a
# pip of its own (ensurepip alone takes ~6 s), and both projects build against one installed
# setuptools instead of an isolated build environment each.
HOST_PIP := $(shell python3 -m pip --python "$$(command -v python3)" --version >/dev/null 2>&1 && echo yes)
ifeq ($(HOST_PIP),yes)
PIP        := python3 -m pip --python $(PY)
VENV_FLAGS := --without-pip
else
PIP        := $(PY) -m pip
VENV_FLAGS :=
endif

$(SERVE_STAMP): pyproject.toml sdk-python/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) install -q 'setuptools>=68' wheel
	$(PIP) install -q --no-build-isolation -e sdk-python -e .
	touch $@

$(VENV_STAMP): $(SERVE_STAMP)
	$(PIP) install -q --no-build-isolation -e sdk-python -e '.[dev]'
	touch $@

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	touch $@

$(NODE_STAMP): sdk-node/package.json sdk-node/package-lock.json
	cd sdk-node && npm ci --no-audit --no-fund
	touch $@

install: $(VENV_STAMP) $(TOOLS_STAMP) $(NODE_STAMP)

# ---------------------------------------------------------------- codegen
gen: install
	bash scripts/gen.sh

check-gen: gen
	bash scripts/check-gen.sh

# ---------------------------------------------------------------- checks
lint: install
	$(BUF) lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

breaking: install
	bash scripts/breaking.sh

# The Python suite drives the Node conformance worker and packs the Node SDK: build it first.
build-node: install
	cd sdk-node && npm run build

test-python: build-node
	$(TEST_ENV) $(PY) -m pytest -q

test-node: build-node
	cd sdk-node && ../$(TEST_ENV) npm test

test-ruby:
	cd sdk-ruby && ../$(TEST_ENV) ruby -Ilib -Itest \
	  -e 'Dir["test/**/*_test.rb"].sort.each { |f| require File.expand_path(f) }'

# Sequential on purpose (also under make -j): each step needs the previous one.
test:
	$(MAKE) install-system
	$(MAKE) install
	$(MAKE) check-gen
	$(MAKE) lint
	$(MAKE) breaking
	$(MAKE) test-python
	$(MAKE) test-node
	$(MAKE) test-ruby

# ---------------------------------------------------------------- run
# The server needs only the Python environment (no npm, no apt): a fresh clone serves as soon as
# pip is done.
run: $(SERVE_STAMP)
	$(VENV)/bin/tasker serve --listen $(LISTEN)

bench: install
	$(TEST_ENV) $(PY) -m bench

# Results of the last run: docs/reliability-chaos.{jsonl,md}, docs/reliability-soak.{jsonl,md}
# (docs/reliability.md says what they mean). CHAOS_ARGS e.g. --scenario blackhole, --short.
CHAOS_ARGS ?=
SOAK_ARGS  ?=
chaos: install
	$(TEST_ENV) $(PY) -m chaos --out docs/reliability-chaos.jsonl \
	  --markdown docs/reliability-chaos.md $(CHAOS_ARGS)

soak: install
	$(TEST_ENV) $(PY) -m chaos.soak --out docs/reliability-soak.jsonl \
	  --markdown docs/reliability-soak.md $(SOAK_ARGS)
# Replay one case: .venv/bin/python -m fuzz --seed SEED --case N
SEED  ?= 20261128
CASES ?= 10000
fuzz: $(VENV_STAMP)
	$(TEST_ENV) $(PY) -m fuzz --seed $(SEED) --cases $(CASES)

clean:
	rm -rf $(VENV) tools/node_modules sdk-node/node_modules sdk-node/dist \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist bench/out
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -not -path './.git/*' -exec rm -rf {} +

# vms developer and CI entry points. Every target bootstraps what it needs (fast when nothing changed).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
BOOTSTRAP := bash deploy/bootstrap.sh
ARGS ?=

.PHONY: help bootstrap bootstrap-dev run test lint typecheck pytest bench bench-full bench-quick clean distclean

help:
	@echo "make run        install runtime deps, then '$(BIN)/vms run' (extra args: ARGS=...)"
	@echo "make test       install dev deps, then ruff, mypy and pytest (fails if any fails)"
	@echo "make lint       ruff check ."
	@echo "make typecheck  mypy vms probes api"
	@echo "make bench      every benchmark under tests/bench with its floors, then one table (.bench/latest.md)"
	@echo "make bench-full the same plus the 1,000,000-row import (peak memory; minutes more)"
	@echo "make bench-quick the same with small sizes, to check the benchmarks run (figures mean nothing)"
	@echo "make clean      remove caches and build artefacts (distclean also removes $(VENV))"

bootstrap:
	$(BOOTSTRAP)

bootstrap-dev:
	$(BOOTSTRAP) --dev

run: bootstrap
	$(BIN)/vms run $(ARGS)

# Runs every step even after a failure (so CI shows all problems), then fails if any step failed.
# The suite on every core (at most 4 workers: each starts its own PostgreSQL, Redis and RTSP servers); tests keep to
# their own loopback addresses and ports, so workers never meet. PYTEST_PARALLEL= runs it in one process.
PYTEST_PARALLEL ?= -n auto --maxprocesses 4

test: bootstrap-dev
	@failed=(); \
	for step in "$(BIN)/ruff check ." "$(BIN)/mypy vms probes api" "$(BIN)/pytest -q $(PYTEST_PARALLEL)"; do \
		echo "==> $$step"; \
		$$step || failed+=("$$step (exit $$?)"); \
	done; \
	if [ $${#failed[@]} -ne 0 ]; then \
		printf 'make test: FAILED: %s\n' "$${failed[@]}" >&2; \
		exit 1; \
	fi; \
	echo "make test: all steps passed"

lint: bootstrap-dev
	$(BIN)/ruff check .

typecheck: bootstrap-dev
	$(BIN)/mypy vms probes api

pytest: bootstrap-dev
	$(BIN)/pytest -q $(ARGS)

# Every benchmark with its floors and baselines, then one table (also written to .bench/latest.md). The bench_*.py
# files are collected only here (tests/bench is outside the test suite). Figures only: a missed goal does not fail.
# In the issue's order (import, quality, listing, discovery), then any other bench_*.py. bench-full adds what takes
# minutes: the 1,000,000-row import (peak memory at 100,000 and 1,000,000 rows in the same table).
BENCH_FIRST := $(addprefix tests/bench/bench_,inventory.py quality.py listing.py discovery.py)
BENCH_FILES := $(BENCH_FIRST) $(filter-out $(BENCH_FIRST),$(sort $(wildcard tests/bench/bench_*.py)))
BENCH := $(BIN)/python -m pytest -q -s -p no:cacheprovider -o python_files='bench_*.py' $(BENCH_FILES)

bench: bootstrap-dev
	$(BENCH) $(ARGS)

bench-full: bootstrap-dev
	VMS_BENCH_FULL=1 $(BENCH) $(ARGS)

# The same with small sizes (seconds, not minutes): checks that every benchmark and the table still work.
bench-quick: bootstrap-dev
	VMS_BENCH_QUICK=1 $(BENCH) $(ARGS)

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache ./*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# vms developer and CI entry points. Every target bootstraps what it needs (fast when nothing changed).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
BOOTSTRAP := bash deploy/bootstrap.sh
ARGS ?=

.PHONY: help bootstrap bootstrap-dev run test lint typecheck pytest bench clean distclean

help:
	@echo "make run        install runtime deps, then '$(BIN)/vms run' (extra args: ARGS=...)"
	@echo "make test       install dev deps, then ruff, mypy and pytest (fails if any fails)"
	@echo "make lint       ruff check ."
	@echo "make typecheck  mypy vms probes api"
	@echo "make bench      benchmarks under tests/bench (prints figures)"
	@echo "make clean      remove caches and build artefacts (distclean also removes $(VENV))"

bootstrap:
	$(BOOTSTRAP)

bootstrap-dev:
	$(BOOTSTRAP) --dev

run: bootstrap
	$(BIN)/vms run $(ARGS)

# Runs every step even after a failure (so CI shows all problems), then fails if any step failed.
test: bootstrap-dev
	@failed=(); \
	for step in "$(BIN)/ruff check ." "$(BIN)/mypy vms probes api" "$(BIN)/pytest -q"; do \
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

bench: bootstrap-dev
	$(BIN)/python -m pytest -q -s tests/bench $(ARGS)

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache ./*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# One command for each thing a developer does; README and .ci/run use these same targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2

.PHONY: help up down status venv deps images migrate demo test test-unit lint format bench bench-logs bench-redact chaos clean

help:
	@echo "make up      set up everything and start the fleet, then run a demo"
	@echo "make down    stop the fleet"
	@echo "make test    run the whole test suite (what CI runs)"
	@echo "make lint    ruff"

$(VENV)/.installed: requirements/base.txt requirements/dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

deps:
	infra/local/install-deps.sh

images: deps
	infra/images/build.sh

migrate: venv deps
	$(VENV)/bin/sandbox-runner migrate

up: venv deps images migrate
	infra/local/fleet.sh up
	$(MAKE) --no-print-directory demo

demo:
	@echo "== demo: seo.evaluate_content on localhost:5000/seo-adapter:dev"
	$(VENV)/bin/sandbox-runner submit infra/examples/seo-run.json

down:
	infra/local/fleet.sh down

status:
	infra/local/fleet.sh status

test: venv deps images
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

test-unit: venv
	$(PY) -m pytest tests/unit -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Benchmarks drive the api far past a caller's fair share: the fleet they start has no rate limit.
bench bench-logs: export SANDBOX_RATE_LIMIT_PER_MINUTE = 0

# A fleet already running was started with its own rate limit: restart it without one.
bench: up
	infra/local/fleet.sh down && infra/local/fleet.sh up
	$(PY) -m tests.bench.suite

chaos: venv deps images
	$(PY) -m tests.bench.chaos --runs $${CHAOS_RUNS:-200}

bench-logs: up
	infra/local/fleet.sh down && infra/local/fleet.sh up
	$(PY) -m tests.bench.logs_bench

bench-redact: venv
	$(VENV)/bin/pip install -q -r requirements/bench.txt
	$(PY) -m tests.bench.redact_bench

clean: down
	rm -rf $(VENV) .run

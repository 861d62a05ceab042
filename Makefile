# MM-IM entry points. `make up` then `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install deps up down status logs test unit integration lint format bench clean

help:
	@echo "make up       start the whole stack (Docker compose if an engine answers, else local processes; LOCAL=1 forces local)"
	@echo "make down     stop what make up started"
	@echo "make status   each service with address, pid and health"
	@echo "make logs     follow the logs"
	@echo "make test     lint, unit and integration tests (the fixtures start their own stack)"
	@echo "make bench    benchmarks (QUICK=1 for a smoke run)"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

deps:
	@bash stack/system-deps.sh

up: install deps
	$(BIN)/python -m stack up $(if $(LOCAL),--local,)

down:
	$(BIN)/python -m stack down

status:
	$(BIN)/python -m stack status

logs:
	$(BIN)/python -m stack logs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/pytest -m "not integration" -q

integration: install deps
	$(BIN)/pytest -m integration -q

test: install deps lint
	$(BIN)/pytest -q -ra

bench: up
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache

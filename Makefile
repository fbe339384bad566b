# Huntaze: every command a developer or CI needs. Only Python 3.11, make and pip are assumed;
# uv is installed with pip when missing, and `uv sync --frozen` installs the rest from uv.lock.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen

.PHONY: help bootstrap browser run test proto proto-check docs lint format migrate bench

help:
	@echo "make run        install, start infrastructure, migrate and run the whole suite"
	@echo "make test       install and run every test"
	@echo "make proto      regenerate the contracts package from proto/"
	@echo "make docs       regenerate the README's settings table"
	@echo "make lint       ruff and mypy"
	@echo "make migrate    apply every service's migrations"
	@echo "make bench      run the benchmarks and print their figures"

bootstrap:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check uv \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check --user uv
	@$(UV) sync --frozen --quiet

# A Chromium for the OnlyFans worker: found, or Playwright's download, or Debian's package.
browser: bootstrap
	@$(RUN) python -m huntaze_devstack.browser

run: bootstrap browser
	$(RUN) python -m huntaze_devstack run

test: bootstrap browser
	$(RUN) pytest

proto: bootstrap
	$(RUN) python -m huntaze_devstack.protogen
	$(RUN) python -m huntaze_devstack.web types

proto-check: bootstrap
	$(RUN) python -m huntaze_devstack.protogen --check

docs: bootstrap
	$(RUN) python -m huntaze_devstack.settings_doc

lint: bootstrap
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/kit/huntaze_kit libs/devstack/huntaze_devstack services/*/huntaze_* simulator/huntaze_simulator

format: bootstrap
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

migrate: bootstrap
	$(RUN) python -m huntaze_devstack migrate

bench: bootstrap
	$(RUN) python -m bench

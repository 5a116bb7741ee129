# The two commands a newcomer needs: `make run` and `make test`.
# The first Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit bench lint migrate schemas clean

install: $(STAMP)

# Reinstall only when the dependency list changes; an unchanged tree costs nothing.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Hodhod needs Python 3.11 or newer on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/hodhod up

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/contract

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check libs services tests bench migrations
	$(BIN)/mypy

migrate: install
	$(BIN)/hodhod migrate

schemas: install
	$(BIN)/hodhod schemas --out docs/schemas

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

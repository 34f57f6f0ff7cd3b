# The two commands of the README. Both create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint format bench clean

demo: $(VENV)/.installed
	$(VENV)/bin/nodal demo

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed-test
	$(PY) bench/bench_datagen.py

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@ $(VENV)/.installed

clean:
	rm -rf var test-artifacts

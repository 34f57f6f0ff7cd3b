# The two commands of the README. Both create .venv when it is missing and install the
# exact versions of the locks (requirements.lock, requirements-test.lock), which
# `make upgrade` re-resolves from pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PYVER := 3.11

.PHONY: demo test lint format bench clean upgrade

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

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements-test.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -r requirements-test.lock
	$(PIP) --no-deps -e .
	touch $@ $(VENV)/.installed

# Re-resolve both locks to the newest versions pyproject.toml allows, install them and run
# the whole suite; the new locks are kept only if it passes.
upgrade: $(VENV)/.installed-test
	cp requirements.lock requirements.lock.bak
	cp requirements-test.lock requirements-test.lock.bak
	$(PIP) uv
	$(VENV)/bin/uv pip compile --quiet --upgrade pyproject.toml --extra test \
		--python-version $(PYVER) -o requirements-test.lock
	$(VENV)/bin/uv pip compile --quiet --upgrade pyproject.toml --python-version $(PYVER) \
		-c requirements-test.lock -o requirements.lock
	if $(PIP) -r requirements-test.lock && $(MAKE) test; then \
		rm requirements.lock.bak requirements-test.lock.bak; \
	else \
		mv requirements.lock.bak requirements.lock; \
		mv requirements-test.lock.bak requirements-test.lock; \
		$(PIP) -r requirements-test.lock; exit 1; \
	fi

clean:
	rm -rf var test-artifacts

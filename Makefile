# The two commands: `make demo` and `make test`. Both create the virtualenv and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test-provider demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The OpenID provider the sign-in tests start (tests/oidc, the npm package oidc-provider). Without npm the OIDC
# tests skip with the reason (fail under REQUIRE_SERVICES=1).
OIDC_STAMP := tests/oidc/node_modules/.installed
$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error && touch $(OIDC_STAMP); \
	else echo "npm is not installed: the OIDC sign-in tests will skip"; fi

test-provider: $(OIDC_STAMP)

demo: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install test-provider
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) var/test-*.sqlite3 tests/oidc/node_modules

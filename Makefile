# Quick start: `make run` (gateway on http://127.0.0.1:7071 with the AOAI simulator) and `make test`.
# Python 3.13: the one on PATH if it runs, else pyenv's or the system's build. Override with PYTHON=...
PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-py3.13

.PHONY: run test lint bench venv iac-venv servers clean

# A venv from another Python (an older checkout's 3.11) is made again.
define fresh_venv
	@test -n "$(PYTHON)" || { echo "make: Python 3.13 not found: install python3.13 (or pyenv install 3.13) or set PYTHON=/path/to/python3.13" >&2; exit 1; }
	@$(1)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 || { rm -rf $(1) && $(PYTHON) -m venv $(1); }
endef

$(STAMP): requirements.txt requirements-dev.txt
	$(call fresh_venv,$(VENV))
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

# IaC checks (pycep-parser, checkov) live in their own venv: their pins conflict with the app's.
IAC_VENV ?= .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed-py3.13

$(IAC_STAMP): requirements-iac.txt
	$(call fresh_venv,$(IAC_VENV))
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	@touch $(IAC_STAMP)

iac-venv: $(IAC_STAMP)

# Real protocol servers for the tests (npm: Cosmos DB for NoSQL, Azurite for Blob Storage), pinned by testing/servers/package-lock.json.
SERVERS_STAMP := testing/servers/node_modules/.installed

$(SERVERS_STAMP): testing/servers/package.json testing/servers/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm not found: install Node.js 20+ (apt-get install nodejs npm) for the test servers" >&2; exit 1; }
	npm ci --prefix testing/servers --no-audit --no-fund --loglevel=error
	@touch $(SERVERS_STAMP)

servers: $(SERVERS_STAMP)

run: $(STAMP)
	$(PY) -m devhost

test: $(STAMP) $(IAC_STAMP) $(SERVERS_STAMP)
	REQUIRE_IAC=1 IAC_VENV=$(IAC_VENV) $(PY) -m pytest

# ruff (lint) and mypy (types), configured in pyproject.toml. CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(IAC_VENV) .gateway .pytest_cache testing/servers/node_modules

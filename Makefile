# Quick start: `make run` (gateway on http://127.0.0.1:7071 with the AOAI simulator) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench venv iac-venv clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

# IaC checks (pycep-parser, checkov) live in their own venv: their pins conflict with the app's.
IAC_VENV ?= .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed

$(IAC_STAMP): requirements-iac.txt
	@test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV) || python3 -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	@touch $(IAC_STAMP)

iac-venv: $(IAC_STAMP)

run: $(STAMP)
	$(PY) -m devhost

test: $(STAMP) $(IAC_STAMP)
	REQUIRE_IAC=1 IAC_VENV=$(IAC_VENV) $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(IAC_VENV) .gateway .pytest_cache

# Two commands set everything up from a fresh clone:
#   make run    creates .venv, installs the project, runs the notebook sequence on the embedded
#               default (synthetic data, smoke profile) and writes reports/smoke/report.html
#   make test   creates .venv, installs the project with its test extras, runs ruff and pytest
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv run notebooks test lint bench lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name lhc --display-name "Python (lhc)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lhc run

# Re-execute the notebook sequence with its defaults and store the outputs nbval compares.
notebooks: $(STAMP)
	$(PY) -c "from lhc.workbench import refresh_outputs; refresh_outputs()"

lint: $(STAMP)
	$(VENV)/bin/ruff check lhc tests benchmarks

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/lhc_layer.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pipeline.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

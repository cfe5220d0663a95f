# Two commands set everything up from a fresh clone:
#   make run    creates .venv, installs the project, runs the notebook sequence on the embedded
#               default (synthetic data, smoke profile) and writes reports/smoke/report.html
#   make test   creates .venv, installs the project with its test extras, runs ruff and pytest
# Both install both backends (extras tf and jax): TensorFlow trains here, JAX is tested too;
# and Ray Tune (extra ray) for lhc sweep --engine ray. pip -qq: errors only, so that CI's log
# shows the tests rather than the registry's warnings.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv run notebooks test nbval-drift lint bench lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[tf,jax,ray,test]'
	$(PY) -m ipykernel install --sys-prefix --name lhc --display-name "Python (lhc)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lhc run

# Re-execute the notebook sequence with its defaults and store the outputs nbval compares.
notebooks: $(STAMP)
	$(PY) -c "from lhc.workbench import refresh_outputs; refresh_outputs()"

lint: $(STAMP)
	$(VENV)/bin/ruff check lhc tests benchmarks gpu

# --durations: the slowest tests, so that a slower machine's drift towards CI's limit shows.
test: lint
	$(PY) -m pytest -n auto --maxprocesses 2 --dist loadfile --no-loadscope-reorder --durations=15

# The committed notebooks against a fresh smoke run under the numerics another CPU gives:
# TensorFlow's own kernels instead of oneDNN's, then one thread (about 5 minutes each).
nbval-drift: $(STAMP)
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -q tests/test_notebooks_nbval.py -k committed_outputs
	TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 \
	  $(PY) -m pytest -q tests/test_notebooks_nbval.py -k committed_outputs

bench: $(STAMP)
	$(PY) benchmarks/lhc_layer.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pipeline.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# The GPU run's kit (issue 17): the Keras wheels the GPU machine lacks and the real FER2013 as a
# data pack, in .gpu-kit/ (gpu/make_kit.py; fails when the kit and the tree exceed 60 MiB).
# On the GPU machine: bash gpu/run.sh, carrying .gpu-kit (README, "The GPU run (issue 17)").
.PHONY: gpu-kit
gpu-kit: $(STAMP)
	$(PY) gpu/make_kit.py

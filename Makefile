# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv with the pinned stack from pyproject.toml; nothing is installed by hand.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=
# pytest-xdist workers for make test / test-fast (one per core, at most 4; 0 runs in this
# process); --dist loadfile keeps a test file on one worker, so its module fixtures (a small
# cross-validation, a trained run) are built once
PYTEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))" 2>/dev/null || echo 2)

.PHONY: install demo test test-fast bench bench-all clean help

help:
	@echo "make demo   install into $(VENV), then run the main job on synthetic data in $(DEMO_DIR)/"
	@echo "make test   install into $(VENV), then run the test suite"
	@echo "make test-fast   the edit loop: every test not marked slow or slurm (< 3 minutes)"
	@echo "make bench  the quick benchmark (start-up); make bench-all: every benchmark"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh $(DEMO_DIR)

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow and not slurm" $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/startup.py

# The long ones (tens of minutes on 2 cores; the pipelines use ../shared/data when present).
bench-all: bench
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/input_pipeline.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/seg_pipeline.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/predict_throughput.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/sweep_cost.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/train_precision.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/model_load.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# Two commands on a fresh machine:  make demo  (install + run the pipeline on configs/tiny.yaml)
#                                   make test  (install + run the test suite)
# Everything is installed into .venv; nothing is needed beyond python3 (>= 3.10) with venv and pip.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU-only machines get the CPU build of torch (a small local wheel here, ~200 MB elsewhere); on a GPU machine
# run `make TORCH_SPEC=torch` (or any CUDA build) to let pip choose.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
STAMP  := $(VENV)/.installed
CONFIG ?= configs/tiny.yaml
ARGS   ?=

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coderl-ray pipeline --config $(CONFIG) $(ARGS)

# The suite runs in TEST_WORKERS pytest-xdist workers, whole files at a time (a file's module fixtures, e.g. the
# 4-node cluster of tests/test_cluster_local.py, start once); each worker has its own session Ray. Its end-to-end
# tests spend much of their time waiting on processes, so two workers on 2 cores finish in ~2/3 of the time of one
# (docs/benchmarks.md, "Test suite"). TEST_WORKERS=0 runs it in one process.
# Then a second pytest process: the tests' own Ray holds the dashboard agent's default port, which the README's
# `ray start --head` needs, so the test that runs it verbatim goes in a process without one.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not own_process" $(ARGS)
	$(PY) -m pytest -q -m own_process $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not cluster" $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache

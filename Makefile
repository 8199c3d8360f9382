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

# Three pytest processes. The suite's end-to-end tests spend much of their time waiting on the processes they start
# (Ray nodes and workers, jobs, sandboxes), so SIDE_TESTS (the multi-node cluster, the `ray job submit` tests, the
# killed-and-resumed pipelines and three more: about half the suite's time) run beside the rest, each process with a
# Ray of its own; their output follows the rest's (docs/benchmarks.md, "Test suite"). Then the tests that need a
# machine where no other Ray runs: a Ray holds the dashboard agent's default port, which `ray start --head` needs.
SIDE_TESTS := tests/test_cluster_local.py tests/test_job_submit.py tests/test_pipeline.py tests/test_online.py \
              tests/test_algorithms_ray.py tests/test_console_output.py tests/test_inference_benchmark.py

test: $(STAMP)
	@$(PY) -m pytest -q -p no:cacheprovider -m "not own_process" $(SIDE_TESTS) $(ARGS) > .pytest-side.log 2>&1 & \
	side=$$!; $(PY) -m pytest -q -m "not own_process" $(addprefix --ignore=,$(SIDE_TESTS)) $(ARGS); rest=$$?; \
	wait $$side; s=$$?; echo "=== $(SIDE_TESTS), run beside the above ==="; cat .pytest-side.log; \
	[ $$rest -eq 0 ] && [ $$s -eq 0 ]
	$(PY) -m pytest -q -m own_process $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not cluster" $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .pytest-side.log

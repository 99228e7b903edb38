# segvn: `make install` then `make test`; `make train` runs the main job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test test-fast test-benchmarks reliability lint check-size docs format train bench clean labelstudio test-labelstudio

install:  ## a .venv with pinned dependencies and segvn installed editable
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"

# two pytest workers on two cores: one torch thread each, else they fight over the cores;
# the 30 slowest tests listed at the end (what to trim first)
test:  ## the whole suite (real data from ../shared or $$SEGVN_SHARED; skipped clearly without it)
	WANDB_MODE=offline OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -m "not labelstudio and not benchmark" --durations=30 $(PYTEST_ARGS)

test-fast:  ## without the tests marked slow (every test that trains or starts a command)
	WANDB_MODE=offline OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow and not labelstudio and not benchmark" $(PYTEST_ARGS)

reliability:  ## the reliability probes alone, then their tally (outputs/reliability/summary.json)
	rm -rf outputs/reliability
	SEGVN_PROBE_REPORT=outputs/reliability/probes.json SEGVN_KILL_REPEATS=3 WANDB_MODE=offline OMP_NUM_THREADS=1 \
		$(BIN)/python -m pytest -n 2 --dist loadgroup -m reliability tests/reliability $(PYTEST_ARGS); \
		status=$$?; $(BIN)/python -m tests.reliability.tally outputs/reliability; exit $$status

labelstudio:  ## Label Studio in its own venv, .venv-labelstudio (it pins numpy/opencv apart from segvn's)
	$(PYTHON) -m venv .venv-labelstudio
	.venv-labelstudio/bin/pip install --quiet label-studio==1.23.2

test-benchmarks:  ## the benchmark protocols end to end at tiny sizes (active_learning, pseudolabel_quality, selftrain_continued; minutes)
	WANDB_MODE=offline OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m benchmark tests/test_bench.py $(PYTEST_ARGS)

test-labelstudio:  ## the end-to-end test with a real Label Studio (make labelstudio first)
	WANDB_MODE=offline OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m labelstudio tests/test_labelstudio_e2e.py $(PYTEST_ARGS)

lint: check-size  ## ruff (lint + format), the import-linter layer contracts of pyproject.toml, file sizes
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

check-size:  ## no tracked file over 1 MB
	$(BIN)/python .ci/check_size.py

docs:  ## the documentation site (mkdocs-material) into site/; --strict: a warning or broken link fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench:  ## every benchmark -> benchmarks/results/latest.{json,md}; QUICK=1: tiny sizes (CI runs it)
	env -u OMP_NUM_THREADS $(BIN)/python benchmarks/run.py $(if $(QUICK),--quick,)

train:  ## the thesis recipe on the embedded (synthetic) data
	$(BIN)/python -m segvn.train +experiment=resnet18

clean:
	rm -rf outputs site .pytest_cache .ruff_cache

# SynapseNet Serverless. `make run` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
# Python caches bytecode (__pycache__/, git-ignored; never packaged) even where the environment
# sets PYTHONDONTWRITEBYTECODE: otherwise every pytest worker and child process compiles our
# modules again and pytest rewrites the asserts of ~270 plugin modules again (about 2 s each).
export PYTHONDONTWRITEBYTECODE :=
# Modules held at 100% line coverage.
STRICT_COVERAGE ?= chalicelib/explainability/aggregator.py,chalicelib/dataversion/lineage.py,chalicelib/abtesting/routing.py,chalicelib/abtesting/assignment.py

.PHONY: run test coverage-audit test-fast lint format clean venv fuzz package deploy demo bench trusted-types

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt layers/explainer/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=23,<26.3"  # chalice needs pip<26.3
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# the Python client and the `synapse` command (.venv/bin/synapse), editable
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The state is kept in .synapse-local/ across restarts; `make run RESET=1` starts empty.
run: $(STAMP)
	PORT=$(PORT) SYNAPSE_LOCAL_RESET=$(RESET) $(BIN)/python -m synapse_local

# Test processes. Four on a 2-core machine: many tests wait (on a subprocess, a local stack, a
# flush interval, a browser) while another runs, and on a machine other work keeps busy, four
# workers keep more of its time. A clean clone's pytest took 502 s with 2, 459 s with 3, 407 s
# with 4 and 485 s with 6 on a quiet 2-core machine (2026-12-03).
WORKERS ?= 4
PYTEST_COV := --cov=chalicelib --cov=synapse_local --cov=synapse_client --cov=app --cov-report=term-missing:skip-covered --cov-fail-under=85

test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_COV)
	@if [ -n "$(STRICT_COVERAGE)" ]; then \
		$(BIN)/python -m coverage report --fail-under=100 --include="$(STRICT_COVERAGE)"; fi

# Every test traced, a coverage context per test: names any line only the tests that `make test`
# runs untraced (tests/conftest.py UNTRACED_TESTS) cover, and fails if there is one.
coverage-audit: $(STAMP)
	SYNAPSE_TRACE_ALL=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder \
		$(PYTEST_COV) --cov-context=test
	$(BIN)/python -m tests.helpers.coverage_audit .coverage

# A quick loop while working: no coverage, without the tests marked slow or e2e (make test runs all).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder -p no:cov -m "not slow and not e2e"

# Longer API fuzzing and load than `make test` runs (examples per pass, load seconds).
FUZZ_EXAMPLES ?= 200
LOAD_SECONDS ?= 30
# Outcomes posted by the local stack's memory soak (tests/reliability/test_local_soak.py).
SOAK_OUTCOMES ?= 20000

fuzz: $(STAMP)
	SYNAPSE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SYNAPSE_FUZZ_SHRINK=1 SYNAPSE_LOAD_SECONDS=$(LOAD_SECONDS) \
		SYNAPSE_SOAK_OUTCOMES=$(SOAK_OUTCOMES) \
		$(BIN)/python -m pytest tests/reliability/test_api_fuzz.py tests/reliability/test_load.py \
		tests/reliability/test_local_soak.py -p no:cov -n 0

lint: $(STAMP)
	$(BIN)/ruff check app.py chalicelib synapse_local synapse_client tests bench demo infra
	$(BIN)/ruff format --check app.py chalicelib synapse_local synapse_client tests bench demo infra
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format app.py chalicelib synapse_local synapse_client tests bench demo infra
	$(BIN)/ruff check --fix app.py chalicelib synapse_local synapse_client tests bench demo infra

# The skops allow-list (chalicelib/registry/trusted_types.json) from the pinned scikit-learn, numpy,
# scipy and skops; rerun after changing layers/explainer/requirements.txt and review the diff.
trusted-types: $(STAMP)
	$(BIN)/python -m infra.trusted_types

# Deployment (see infra/). `make package` needs no AWS account: it builds dist/deployment.zip and
# dist/template.json for STAGE, prints every artifact's unzipped size (the explainer image's
# dependencies are installed into dist/.cache to be measured) and cfn-lints the template.
STAGE ?= prod

package: $(STAMP)
	$(BIN)/python -m infra.package --stage $(STAGE) --out dist --image --lint

# Needs AWS credentials, AWS_REGION and Docker; checks them before building anything.
deploy:
	STAGE=$(STAGE) PYTHON=$(BIN)/python infra/deploy.sh

# `make demo`: the whole story through the HTTP API on a local stack it starts (or on
# SYNAPSE_URL with SYNAPSE_TOKEN); writes demo-output/ (report.html, PNGs). DEMO_FAST=1: small.
DEMO_STAMP := $(VENV)/.installed-demo
BENCH_STAMP := $(VENV)/.installed-bench

$(DEMO_STAMP): $(STAMP) requirements-demo.txt
	$(BIN)/python -m pip install --quiet -r requirements-demo.txt
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	SYNAPSE_SCHEDULE_SECONDS=$${SYNAPSE_SCHEDULE_SECONDS:-2} $(BIN)/python -m demo --out demo-output

# `make bench`: every bench/bench_*.py, bounded (BENCH_BUDGET), into bench/results.md and
# bench/results/*.json. QUICK=1 passes --quick to the benches that have it. Peers from
# requirements-bench.txt: growthbook into .venv; DVC (whose botocore pin clashes with boto3's)
# into bench/.dvc-venv, and bench_ingest reports the DVC peer as unavailable if that fails.
DVC_VENV := bench/.dvc-venv

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet $$(grep -E '^growthbook==' requirements-bench.txt)
	test -x $(DVC_VENV)/bin/dvc || { $(PYTHON) -m venv $(DVC_VENV) && \
		$(DVC_VENV)/bin/python -m pip install --quiet -r requirements-bench.txt; } || \
		echo "warning: could not install DVC into $(DVC_VENV); the ingest bench skips its peer"
	touch $(BENCH_STAMP)

# BENCH_BUDGET bounds the whole run in seconds (each bench also has its own limit in
# bench/run_all.py); on a loaded shared machine QUICK=1 keeps every bench in the run.
BENCH_BUDGET ?= 3600

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick) --budget $(BENCH_BUDGET)

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov dist demo-output

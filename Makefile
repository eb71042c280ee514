# Rudder developer entry points. `make run` and `make test` each create (or reuse) the virtual
# environment at .venv first, so either one works on a fresh machine.
#
#   make run     the main job (see README)
#   make test    lint + the test suite
#   make bench   the benchmark scripts in benchmarks/

PYTHON ?= $(shell command -v python3.11 || command -v python3.10 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rudder-installed
RUN_DIR ?= runs/quickstart

.PHONY: run test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 11) else "Rudder needs Python 3.10 or 3.11 (dgl 2.1.0 has no wheel for %d.%d); set PYTHON=..." % v)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rudder trace synth --out $(RUN_DIR)/trace
	$(BIN)/rudder replay --trace $(RUN_DIR)/trace --policy all --buffer 0.05 --json $(RUN_DIR)/replay-5pct.json
	$(BIN)/rudder replay --trace $(RUN_DIR)/trace --policy all --buffer 0.25 --json $(RUN_DIR)/replay-25pct.json

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_buffer.py
	$(BIN)/python benchmarks/bench_replay.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

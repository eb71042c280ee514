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

.PHONY: run test lint bench venv clean sysdeps

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 11) else "Rudder needs Python 3.10 or 3.11 (dgl 2.1.0 has no wheel for %d.%d); set PYTHON=..." % v)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: real DistDGL training on 2 emulated machines (network namespaces with 1 Gbit/s
# links when run as root, loopback otherwise): DistDGL as is, DistDGL with Rudder's buffer and
# its rule-based decider, and with the LLM agent (the bundled model, served locally unless
# something answers at RUDDER_LLM_URL; one agent sidecar per machine).
TRAIN := --partitions $(RUN_DIR)/parts --machines 2 --trainers 1 --epochs 60 --bandwidth 1gbit \
	--tensorboard $(RUN_DIR)/tensorboard
run: $(STAMP)
	$(BIN)/rudder graph generate --nodes 100000 --avg-degree 20 --communities 32 --feat-dim 100 --classes 16 --out $(RUN_DIR)/graph
	$(BIN)/rudder graph partition --graph $(RUN_DIR)/graph --parts 2 --out $(RUN_DIR)/parts
	$(BIN)/rudder models fetch qwen2.5-coder-0.5b
	$(BIN)/rudder train $(TRAIN) --policy none --out $(RUN_DIR)/none
	$(BIN)/rudder train $(TRAIN) --policy rudder --decider heuristic --buffer 0.25 --record-trace --out $(RUN_DIR)/heuristic
	$(BIN)/rudder train $(TRAIN) --policy rudder --decider llm --buffer 0.25 --out $(RUN_DIR)/llm
	$(BIN)/rudder compare $(RUN_DIR)/none $(RUN_DIR)/heuristic $(RUN_DIR)/llm
	$(BIN)/rudder replay --trace $(RUN_DIR)/heuristic/trace --policy all --buffer 0.25 --json $(RUN_DIR)/replay.json

# What the integration tests use from the system: a real OpenSSH server (tests/integration/
# test_ssh_real.py). Installed when missing, as root, with apt; elsewhere those tests skip.
sysdeps:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends openssh-server openssh-client >/dev/null; \
	  else echo "note: no OpenSSH server here: the real-ssh tests will skip"; fi; \
	fi

test: $(STAMP) sysdeps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_buffer.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

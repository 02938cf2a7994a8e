# roomcast: two commands on a fresh machine.
#   make run   - create .venv, install, start a local cluster (3 NATS servers + 2 edge nodes)
#   make test  - create .venv, install, run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast test-slow lint bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/roomcast dev

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-slow: $(STAMP)
	ROOMCAST_SLOW=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.fanout --gen-gc
	$(BIN)/python -m bench.pingpong
	$(BIN)/python -m bench.storm
	$(BIN)/python -m bench.storm_raw --gen-gc
	$(BIN)/python -m bench.presence
	$(BIN)/python -m bench.idle
	$(BIN)/python -m bench.publish --window 8 64 --gen-gc
	$(BIN)/python -m bench.writecost
	$(BIN)/python -m bench.wsengines --gen-gc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

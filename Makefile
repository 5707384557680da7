# The two set-up commands of the README: `make demo` (main job) and `make test` (tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo needs only the runtime (the offline models are runtime dependencies): a light
# first run. Same venv, its own stamp, so `make test` afterwards still adds the dev extras.
RUNTIME := $(VENV)/.runtime

.PHONY: demo test lint typecheck unit bench clean chromium haproxy

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# the Smart Turn weights (antiphon[turn]) without Pipecat's dependencies: docs/turns.md
	$(PY) -m pip install --quiet --no-deps 'pipecat-ai==1.14.0'
	touch $(STAMP)

# The venv's own pip (3.11's) installs the runtime: upgrading pip first cost 5-20 s of a
# cold start (bench/cold_demo.py); `make test` upgrades it.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

# The main job: the offline agent answers a recorded question, then serves the browser
# playground (open the printed URL, press Talk; Ctrl-C stops the server).
demo: $(RUNTIME)
	$(VENV)/bin/antiphon talk examples/question.wav --out reply.wav
	$(VENV)/bin/antiphon serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The playground's end-to-end test drives Debian's Chromium (no pip package ships one).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The drain test runs two servers behind Debian's HAProxy (tests/test_deploy.py).
haproxy:
	@command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq haproxy >/dev/null; }

unit: $(STAMP) chromium haproxy
	$(PY) -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/tts_overhead.py
	$(PY) bench/resample.py
	$(PY) bench/realtime_overhead.py
	$(PY) bench/session.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

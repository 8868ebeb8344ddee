# tonearm: two commands do everything on a fresh machine.
#   make run    build the venv, generate and ingest the demo master, serve it with a player page
#   make test   install what the tests need (ffmpeg, nginx, chromium, node packages) and run them
#   make test-fast   the same minus the browser, nginx and slow tests: the local loop
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
HOST   ?= 127.0.0.1
PORT   ?= 8080
# pytest-xdist workers: most test time is players and servers waiting on real time, so two
# processes on two cores nearly halve the wall time (TEST_WORKERS=0 runs in one process).
TEST_WORKERS ?= 2

.PHONY: run venv test test-fast test-deps bench capacity clean doctor service

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	touch $@

venv: $(VENV)/.installed

doctor: venv
	$(VENV)/bin/tonearm doctor

run: venv
	$(VENV)/bin/tonearm --data $(DATA) doctor
	$(VENV)/bin/tonearm --data $(DATA) ingest "$$($(VENV)/bin/tonearm --data $(DATA) demo)"
	@echo
	@echo "  tonearm is serving the demo: open http://$(HOST):$(PORT)/  (Ctrl-C stops)"
	@echo
	$(VENV)/bin/tonearm --data $(DATA) serve --host $(HOST) --port $(PORT)

test-deps: venv
	bash scripts/test-deps.sh

test: test-deps
	$(PY) -m pytest -ra -n $(TEST_WORKERS) -m "not long" $(PYTEST_ARGS)

# The local loop: everything but the browser, nginx and slow tests (README, "Tests"), under two minutes.
test-fast: test-deps
	$(PY) -m pytest -ra -n $(TEST_WORKERS) -m "not browser and not nginx and not slow" $(PYTEST_ARGS)

bench: test-deps
	$(PY) -m pytest -ra -m long
	$(PY) -m benchmarks.run $(BENCH_ARGS)
	$(PY) -m benchmarks.latency $(LATENCY_ARGS)
	$(PY) -m benchmarks.queue $(QUEUE_ARGS)

# The ingest service on one machine, on loopback: PostgreSQL, the API, two workers, a drop-folder
# watcher, the webhook sender and the origin; prints the URLs, the drop folder and an API key (README,
# "Running the service"). Ctrl-C stops everything.
service: venv
	$(PY) -m tonearm.app.service $(SERVICE_ARGS)

capacity: venv  ## the capacity model (README "Scale-out") from benchmarks/results/results.json
	$(PY) -m benchmarks.capacity

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache benchmarks/work

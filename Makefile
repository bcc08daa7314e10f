# The two commands: `make run` (the whole service, embedded defaults) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-faults test-openapi docs-screenshot console-screenshot bench schema clean

$(STAMP): requirements/constraints.txt requirements/base.txt requirements/production.txt requirements/test.txt requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

## Start the API, a jobs worker, a long-jobs worker, a deliveries worker and beat (Ctrl-C stops all).
run: $(STAMP)
	scripts/run-dev

## Run the test suite against PostgreSQL and Redis (127.0.0.1 unless overridden); it ends with
## its 20 slowest tests, where a slower suite shows why.
test: $(STAMP)
	$(BIN)/pytest --durations=20

## The suite less the browser, fuzzing, client generation and whole-stack boots (about 7 min on 2 cores).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not faults and not slow"

## Fault-injection, load and RabbitMQ tests on private PostgreSQL/Redis (slow; see docs/reliability.md).
test-faults: $(STAMP)
	$(BIN)/pytest --durations=10 -m faults tests/faults

## Benchmarks against the baseline app (needs wrk; ~11 min; not in CI; BENCH_ARGS="--quick" etc.): docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## Regenerate the committed OpenAPI spec.
schema: $(STAMP)
	$(BIN)/python manage.py spectacular --file openapi/schema.yaml --validate --fail-on-warn

## The spec's proofs alone (also in `make test`): committed spec, generated client, Chromium, schemathesis.
test-openapi: $(STAMP)
	$(BIN)/pytest tests/openapi

## Regenerate docs/redoc.png (headless Chromium; apt-get install chromium).
docs-screenshot: $(STAMP)
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m tests.openapi.chromium docs/redoc.png

## Regenerate docs/console.png: the console's browser test, with data in every section, saves it.
console-screenshot: $(STAMP)
	CONSOLE_SCREENSHOT=docs/console.png $(BIN)/pytest -q -p no:cacheprovider tests/console/test_console_browser.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache

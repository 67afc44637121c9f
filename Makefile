# The two commands of the quickstart. Both install what they need.
.PHONY: flower run test typecheck bench clean

VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	bash scripts/ensure-venv.sh

## run: Redis + MongoDB-protocol server + one Celery worker + the API on 127.0.0.1:8080; Ctrl-C stops all.
run: $(VENV)/.installed
	$(PY) scripts/provision.py --state .run/services -- $(VENV)/bin/fhir-patch serve --log-dir .run/logs

## flower: like run, plus Flower (worker and task monitor) on http://127.0.0.1:5555.
flower: $(VENV)/.installed
	$(PY) scripts/provision.py --state .run/services -- $(VENV)/bin/fhir-patch serve --log-dir .run/logs --flower-port 5555

## test: ephemeral Redis and MongoDB-protocol server on free ports, the whole pytest suite, teardown.
## Two test processes (pytest-xdist), a test file each at a time: the pipeline tests mostly wait on the
## processes they start, so two overlap well on two cores. TEST_PROCESSES=0 runs them in one process.
TEST_PROCESSES ?= 2
## The browser tests (tests/browser) drive Debian's Chromium, installed here with apt when it is missing.
test: $(VENV)/.installed
	bash scripts/ensure-chromium.sh >/dev/null
	$(PY) scripts/provision.py -- $(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

typecheck: $(VENV)/.installed
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .cache .run

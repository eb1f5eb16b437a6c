# DMS: the two commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN := .run
EMULATOR_PORT ?= 8443
AUDIT_PORT ?= 5984

.PHONY: help venv demo airflow test lint emulator audit-server bench down clean

help:
	@echo "make demo      run the sample migration end to end (see README)"
	@echo "make test      the whole test suite against real services"
	@echo "make airflow   Airflow standalone on :8080 with the DMS DAGs (prints the admin password)"
	@echo "make lint      ruff, including the Airflow (AIR) rules"
	@echo "make emulator  run the Salesforce emulator in the foreground on :$(EMULATOR_PORT)"
	@echo "make audit-server  the audit store (pouchdb-server) in the foreground on :$(AUDIT_PORT)"
	@echo "make bench     the benchmarks in bench/"
	@echo "make down      stop every service the Makefile started"

$(STAMP): requirements.txt requirements-dev.txt
	scripts/system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Starts what is not already running (Redis, the audit store, the emulator), runs the sample
# migration with `airflow dags test`, prints the reconciliation and stops what it started.
demo: $(STAMP)
	$(PY) -m scripts.demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

emulator: $(STAMP)
	$(PY) -m salesforce_emulator --org include/org/sample_org.yaml --port $(EMULATOR_PORT) --cert-dir .emulator/certs

# Airflow standalone with the project's DAGs, the local stack and the admin password printed;
# Ctrl-C stops Airflow and every service it started.
airflow: $(STAMP)
	$(PY) -m scripts.airflow_standalone

audit-server:
	scripts/audit_server.sh run $(AUDIT_PORT) $(RUN)/audit

bench: $(STAMP)
	$(PY) bench/bench_emulator_bulk2.py
	$(PY) bench/bench_pipeline.py --report-only
	$(PY) bench/bench_scale.py --report-only

down:
	@for f in $(RUN)/*.pid; do [ -e "$$f" ] || continue; pid=$$(cat "$$f"); \
	  kill "$$pid" 2>/dev/null && echo "stopped $$(basename $$f .pid) ($$pid)"; rm -f "$$f"; done; true

clean: down
	rm -rf $(VENV) .emulator $(RUN) node_modules

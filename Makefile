VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# live suites mostly wait (containers, BPF loads, servers): three workers on two cores
TEST_WORKERS ?= 3

.PHONY: bootstrap run test lint bench clean

bootstrap:
	@bash deploy/bootstrap.sh

run: bootstrap
	$(VENV)/bin/eunomia up

test: bootstrap
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --durations=15 $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check services shared tests bench
	$(VENV)/bin/mypy --strict shared services/alerter/engine

bench: bootstrap
	$(PY) -m bench.probe_bench
	$(PY) -m bench.rules_bench
	$(PY) -m bench.pipeline_bench
	$(PY) -m bench.overhead_bench --floor
	$(PY) -m bench.store_bench
	$(PY) -m bench.detection_latency_bench
	$(PY) -m bench.dns_bench

clean:
	rm -rf $(VENV) .pytest_cache

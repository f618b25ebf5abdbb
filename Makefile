VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap run test bench clean

bootstrap:
	@bash deploy/bootstrap.sh

run: bootstrap
	$(VENV)/bin/eunomia up

test: bootstrap
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: bootstrap
	$(PY) -m bench.probe_bench
	$(PY) -m bench.rules_bench
	$(PY) -m bench.pipeline_bench
	$(PY) -m bench.overhead_bench
	$(PY) -m bench.dns_bench

clean:
	rm -rf $(VENV) .pytest_cache

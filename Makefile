# Developer entry points. `make install` then `make test` on a fresh machine (see README.md).
PYTHON ?= python3

.PHONY: install lint test bench

install:
	$(PYTHON) -m pip install "setuptools>=70.1" wheel
	$(PYTHON) -m pip install --no-build-isolation -e ".[dev]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test:
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) -m pytest bench/bench_*.py --benchmark-json=bench/results/latest.json -q
	$(PYTHON) -m bench.report bench/results/latest.json

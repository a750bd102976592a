# Developer entry points. `make install` then `make test` on a fresh machine (see README.md).
PYTHON ?= python3

# test-quick: every loss on the torch and cpu backends, the API, error and trainer unit tests; leaves out
# the Triton kernels under the interpreter, the ahead-of-time compiles, torch.compile / opcheck checks,
# the 512-row Sinkhorn batch and the end-to-end trainer runs (marker "slow"). `make test` runs them all.
QUICK := not triton and not spills and not torch_compile and not opcheck and not batch_sizes_match_oracle

.PHONY: install lint test test-quick bench

install:
	$(PYTHON) -m pip install "setuptools>=70.1" wheel
	$(PYTHON) -m pip install --no-build-isolation -e ".[dev]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test:
	$(PYTHON) -m pytest -q

test-quick:
	$(PYTHON) -m pytest -q -m "not slow" -k "$(QUICK)"

bench:
	$(PYTHON) -m pytest bench/bench_*.py --benchmark-json=bench/results/latest.json -q
	$(PYTHON) -m bench.report bench/results/latest.json

# Developer entry points. `make install` then `make test` on a fresh machine (see README.md).
PYTHON ?= python3
# torch for `make install` when none is installed: this version, a CUDA build (PyPI's, or
# TORCH_CUDA_INDEX) when an NVIDIA driver is present, else the CPU build from the CPU wheel index.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CUDA_INDEX ?=

# test-quick: every loss on the torch and cpu backends, the API, error and trainer unit tests; leaves out
# the Triton kernels under the interpreter, the ahead-of-time compiles, torch.compile / opcheck checks,
# the 512-row Sinkhorn batch and the end-to-end trainer runs (marker "slow"). `make test` runs them all.
QUICK := not triton and not spills and not torch_compile and not opcheck and not batch_sizes_match_oracle

.PHONY: install torch lint test test-quick bench

# The whole set-up from nothing but Python: torch, then the editable install with the C++ extension
# built against that torch (no build isolation, so the build sees it).
install: torch
	$(PYTHON) -m pip install "setuptools>=70.1" wheel
	$(PYTHON) -m pip install --no-build-isolation -e ".[dev]"

torch:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "make install: keeping the installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	elif nvidia-smi >/dev/null 2>&1 || [ -e /proc/driver/nvidia ]; then \
		echo "make install: NVIDIA driver found, installing a CUDA build of torch==$(TORCH_VERSION)"; \
		$(PYTHON) -m pip install "torch==$(TORCH_VERSION)" "numpy<2.4" \
			$(if $(TORCH_CUDA_INDEX),--index-url $(TORCH_CUDA_INDEX) --extra-index-url https://pypi.org/simple) && \
		{ $(PYTHON) -c "import sys, torch; sys.exit(torch.version.cuda is None)" || \
			echo "make install: warning: pip chose a CPU build of torch; set TORCH_CUDA_INDEX (README)"; }; \
	else \
		echo "make install: no NVIDIA driver, installing the CPU build of torch==$(TORCH_VERSION)"; \
		$(PYTHON) -m pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) && \
		$(PYTHON) -m pip install "numpy<2.4"; \
	fi

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

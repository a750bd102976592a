#!/usr/bin/env bash
# GPU checks of the cuda backend (issue 13) on an sm_90 machine, as one function for bench/gpu_check.sh
# (`source bench/gpu_check_cuda.sh; gpu_check_cuda OUT_DIR`) or alone (`bash bench/gpu_check_cuda.sh
# [OUT_DIR]`, default bench/results), from the repository root:
#   1. builds fastkd._C in place with the CUDA kernels (FASTKD_CUDA_ARCHS=90a);
#   2. the oracle test set on backend="cuda": tests/test_cuda_backend.py and the cuda cases of
#      tests/test_divergence.py and tests/test_api.py;
#   3. compute-sanitizer memcheck (the real plans) and racecheck (small shapes, every cluster size);
#   4. the benchmark at N = 16384, V = 128256, bf16 against Triton, Liger, PyTorch eager and
#      torch.compile (divergences: FASTKD_BENCH_DIVERGENCES, default forward_kl,jsd), then fastkd-cuda
#      again with the 64 KiB-per-CTA plan, and a table of GB/s and the fraction of copy bandwidth on
#      the one-pass byte count (bench/cuda_summary.py).
# About 8 minutes on an H200. Liger-Kernel is not in the device image: carry its wheel in .whl/
# (`pip download --no-deps liger-kernel -d .whl` here), which step 0 installs if present.
# Logs, JSON and markdown land in OUT_DIR; returns non-zero if any step failed.

gpu_check_cuda() {
  local out="${1:-bench/results}" failed=""
  mkdir -p "$out"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fastkd-site .whl/*.whl &&
      export PYTHONPATH="$PYTHONPATH:/tmp/fastkd-site"
  fi
  if ! FASTKD_CUDA_ARCHS=90a NVCC_THREADS=8 MAX_JOBS=8 python3 setup.py build_ext --inplace >"$out/cuda-build.log" 2>&1 ||
    ! python3 -c "import fastkd._C as c; assert c.cuda_kernels"; then
    tail -30 "$out/cuda-build.log"
    echo "cuda: BUILD FAILED (log: $out/cuda-build.log)"
    return 1
  fi
  timeout 480 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_cuda_backend.py tests/test_divergence.py \
    tests/test_api.py >"$out/cuda-tests.log" 2>&1 || failed="$failed tests"
  tail -3 "$out/cuda-tests.log"
  local sanitize="compute-sanitizer --kernel-regex kns=divergence_cluster --error-exitcode 9"
  timeout 300 $sanitize --tool memcheck python3 -m bench.cuda_sanitize >"$out/cuda-memcheck.log" 2>&1 ||
    failed="$failed memcheck"
  FASTKD_CUDA_CTA_BYTES=4096 timeout 300 $sanitize --tool racecheck python3 -m bench.cuda_sanitize --small \
    >"$out/cuda-racecheck.log" 2>&1 || failed="$failed racecheck"
  tail -2 "$out/cuda-memcheck.log" "$out/cuda-racecheck.log"
  local bench="python3 -m pytest bench/bench_divergences.py -q -p no:cacheprovider"
  export FASTKD_BENCH_SHAPES=16384x128256 FASTKD_BENCH_DIVERGENCES="${FASTKD_BENCH_DIVERGENCES:-forward_kl,jsd}"
  timeout 600 $bench --benchmark-json="$out/gpu-cuda-divergences.json" >"$out/cuda-bench.log" 2>&1 ||
    failed="$failed bench"
  FASTKD_CUDA_CTA_BYTES=65536 timeout 300 $bench -k fastkd-cuda --benchmark-json="$out/gpu-cuda-64k.json" \
    >>"$out/cuda-bench.log" 2>&1 || failed="$failed bench-64k"
  python3 -m bench.report "$out/gpu-cuda-divergences.json" >>"$out/cuda-bench.log" 2>&1
  python3 -m bench.cuda_summary "$out/gpu-cuda-divergences.json" "$out/gpu-cuda-64k.json" |
    tee "$out/gpu-cuda-summary.md"
  if [ -n "$failed" ]; then
    echo "cuda: FAILED:$failed (logs in $out)"
    return 1
  fi
  echo "cuda: all checks passed (logs in $out)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  gpu_check_cuda "${1:-bench/results}"
fi

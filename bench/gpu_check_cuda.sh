#!/usr/bin/env bash
# GPU checks of the cuda backend (issue 13) on an sm_90 machine, from the repository root, as one
# function that bench/gpu_check.sh can call after its own steps (`source bench/gpu_check_cuda.sh;
# gpu_check_cuda OUT_DIR`) or alone (`bash bench/gpu_check_cuda.sh OUT_DIR`):
#   build    fastkd._C with the CUDA kernels (FASTKD_CUDA_ARCHS=90a), unless it already has them;
#   tests    the oracle test set on backend="cuda" (tests/test_cuda_backend.py and the cuda cases of
#            tests/test_divergence.py, test_api.py, test_numerics.py and test_boundary_rules.py);
#   memcheck compute-sanitizer at the real launch plans, every divergence, clusters of 1, 2, 4 and 8;
#   racecheck the same at small shapes (FASTKD_CUDA_CTA_BYTES=4096 reaches every cluster size);
#   bench    N = 16384, V = 128256, bf16: fastkd-cuda, fastkd-triton, Liger, eager, torch.compile
#            (FASTKD_BENCH_DIVERGENCES, default forward_kl,jsd; skipped when OUT_DIR/divergences.json
#            from bench/gpu_check.sh exists), fastkd-cuda again with the 64 KiB-per-CTA plan, and
#            OUT_DIR/cuda-summary.md: GB/s on the one-pass byte count (12.6 GB) and the fraction of the
#            copy bandwidth measured in the same run (bench/cuda_summary.py).
# About 7 minutes on an H200 (build 1, tests 2, sanitizers 2, bench 2-3). Liger-Kernel is not in the
# device image: bench/gpu_check.sh installs it from a wheel; alone, put PYTHONPATH on an unpacked one.
# Logs land in OUT_DIR/cuda-*.log; the return status is the number of failed steps.

gpu_check_cuda() {
  local out=${1:?usage: gpu_check_cuda OUT_DIR} py=${PYTHON:-python3} failed=0
  mkdir -p "$out"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  cuda_step() { # cuda_step NAME SECONDS COMMAND...: time limit, log in OUT_DIR/cuda-NAME.log, outcome
    local name=$1 limit=$2
    shift 2
    echo "=== cuda $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    if timeout "$limit" "$@" >"$out/cuda-$name.log" 2>&1; then
      echo "=== cuda $name: ok"
    else
      echo "=== cuda $name: FAILED ($?)"
      failed=$((failed + 1))
    fi
    tail -3 "$out/cuda-$name.log"
  }
  if ! "$py" -c "import fastkd._C as c; assert c.cuda_kernels" 2>/dev/null; then
    FASTKD_CUDA_ARCHS=90a NVCC_THREADS=8 MAX_JOBS=8 cuda_step build 240 "$py" setup.py build_ext --inplace
  fi
  cuda_step tests 300 "$py" -m pytest -q -p no:cacheprovider -k cuda tests/test_cuda_backend.py \
    tests/test_divergence.py tests/test_api.py tests/test_numerics.py tests/test_boundary_rules.py
  local sanitizer=(compute-sanitizer --kernel-name kns=divergence_cluster --error-exitcode 9)
  cuda_step memcheck 240 "${sanitizer[@]}" --tool memcheck "$py" -m bench.cuda_sanitize
  FASTKD_CUDA_CTA_BYTES=4096 cuda_step racecheck 240 "${sanitizer[@]}" --tool racecheck \
    "$py" -m bench.cuda_sanitize --small
  local bench=("$py" -m pytest -q -p no:cacheprovider bench/bench_divergences.py)
  local results=("$out/divergences.json")
  export FASTKD_BENCH_SHAPES=16384x128256 FASTKD_BENCH_DIVERGENCES=${FASTKD_BENCH_DIVERGENCES:-forward_kl,jsd}
  if [ ! -f "$out/divergences.json" ]; then
    cuda_step bench 420 "${bench[@]}" --benchmark-json="$out/cuda-divergences.json"
    results=("$out/cuda-divergences.json")
  fi
  FASTKD_CUDA_CTA_BYTES=65536 cuda_step bench-64k 180 "${bench[@]}" -k fastkd-cuda \
    --benchmark-json="$out/cuda-64k.json"
  "$py" -m bench.cuda_summary "${results[@]}" "$out/cuda-64k.json" | tee "$out/cuda-summary.md"
  echo "=== cuda checks done: $failed failed step(s); logs in $out"
  return "$failed"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  gpu_check_cuda "${1:?usage: bench/gpu_check_cuda.sh OUT_DIR}"
fi

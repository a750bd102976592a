#!/usr/bin/env bash
# One GPU window, used fully (< 8 minutes on an H100/H200): build the extension, run the test suite on
# the GPU, then the divergence and fused-linear benchmarks at the target shapes of
# shared/spec/performance.md, with the peers that are not in the device image (Liger-Kernel,
# orda-kernel) from the wheels given. No network needed.
#
#   bench/gpu_check.sh OUT_DIR [WHEEL...]     e.g. liger_kernel-*.whl orda_kernel-0.1.0-py3-none-any.whl
#
# (`pip download --no-deps liger-kernel orda-kernel==0.1.0 -d wheels/` where there is network.) The
# wheels go with --no-deps --no-index into OUT_DIR/wheels, which is put on PYTHONPATH.
#
# Writes under OUT_DIR: gpu_check.log (everything), env.txt, tests.txt, divergences.{json,md,png},
# fused_linear.{json,md,png}. Each step has its own time limit; a failed step is logged and the next
# one still runs; the exit status is the number of failed steps.
#
# FASTKD_GPU_CHECK_DRY_RUN=1 (the CPU test of this script): no build, a few tests, tiny shapes.
set -uo pipefail

out=${1:?usage: bench/gpu_check.sh OUT_DIR [WHEEL...]}
wheels=("${@:2}")
py=${PYTHON:-python}
dry=${FASTKD_GPU_CHECK_DRY_RUN:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
exec > >(tee -a "$out/gpu_check.log") 2>&1
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log the outcome
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    if timeout "$limit" "$@"; then echo "=== $name: ok"; else echo "=== $name: FAILED ($?)"; failed=$((failed + 1)); fi
}

if [ "$dry" = 1 ]; then
    tests=(tests/test_fused_linear.py -k "every_divergence and forward_kl")
    div_shapes=8x1271 fused_shapes=32:16:24:1000 build_limit=0 test_limit=300 bench_limit=300
    select=(-k "fastkd-cpu or torch-eager or trl or orda")  # compiling would be most of a CPU run's time
    export FASTKD_BENCH_DIVERGENCES=forward_kl
else
    tests=(tests)
    div_shapes=16384x128256 fused_shapes="" build_limit=120 test_limit=200 bench_limit=120
    select=()
fi

{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; "$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"; } >"$out/env.txt" 2>&1
cat "$out/env.txt"

if [ "$build_limit" -gt 0 ]; then
    step build "$build_limit" "$py" setup.py build_ext --inplace -q
fi
if [ "${#wheels[@]}" -gt 0 ]; then
    step wheels 60 "$py" -m pip install --no-deps --no-index --target "$out/wheels" "${wheels[@]}"
    export PYTHONPATH="$out/wheels${PYTHONPATH:+:$PYTHONPATH}"
    "$py" -m pip list --path "$out/wheels" --format freeze 2>/dev/null | tee -a "$out/env.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

step tests "$test_limit" bash -c '"$0" -m pytest -q -p no:cacheprovider "${@:2}" > "$1/tests.txt" 2>&1; rc=$?; tail -5 "$1/tests.txt"; exit $rc' "$py" "$out" "${tests[@]}"

FASTKD_BENCH_SHAPES=$div_shapes step divergences "$bench_limit" "$py" -m pytest -q -p no:cacheprovider \
    bench/bench_divergences.py "${select[@]}" --benchmark-json="$out/divergences.json"
[ -f "$out/divergences.json" ] && "$py" -m bench.report "$out/divergences.json" >/dev/null

FASTKD_BENCH_FUSED_SHAPES=$fused_shapes FASTKD_BENCH_FUSED_ALL=$((1 - dry)) step fused_linear "$bench_limit" \
    "$py" -m pytest -q -p no:cacheprovider bench/bench_fused_linear.py "${select[@]}" --benchmark-json="$out/fused_linear.json"
[ -f "$out/fused_linear.json" ] && "$py" -m bench.report "$out/fused_linear.json" >/dev/null

echo "=== done $(date -u +%H:%M:%S): $failed failed step(s); results in $out"
ls "$out"
exit "$failed"

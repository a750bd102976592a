"""Compile every divergence-kernel configuration the launcher can choose for sm_80 and sm_90.

Run as a script in a process without TRITON_INTERPRET (the interpreter replaces the compiler); prints
one JSON record per configuration with ptxas's register count and spill bytes, or the compile error.
"""

import itertools
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastkd.kernels.divergence import divergence_kernel
from fastkd.ops.divergence import LaunchConfig, launch_policy
from fastkd.options import DIVERGENCES

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTXAS = next(
    os.path.join(BIN, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(BIN, n))
)
VOCABS = (1, 16, 100, 1000, 1271, 2048, 4000, 32000, 151936)


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) that ptxas reports for the PTX, for the target the PTX names."""
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [
                PTXAS,
                f"--gpu-name={arch}",
                "-v",
                "--regAllocOptLevel=2",
                path,
                "-o",
                os.path.join(tmp, "k.cubin"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    registers = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out))
    return registers, spills


def signature(dtype: str) -> dict[str, str]:
    sig = {name: f"*{dtype}" for name in ("s_ptr", "t_ptr", "g_ptr")}
    sig.update(loss_ptr="*fp32", valid_ptr="*u8", labels_ptr="*i64", scale_ptr="*fp32")
    sig.update({name: "i64" for name in ("s_stride", "t_stride", "g_stride")}, V="i32")
    sig.update({name: "fp32" for name in ("inv_t", "param", "lw1", "lw2", "hard_w")})
    sig.update({name: "constexpr" for name in ("DIV", "HARD", "BLOCK", "SEARCH_BLOCK")})
    return sig


def compile_one(divergence: str, arch: int, config: LaunchConfig, hard: bool, dtype: str) -> dict:
    block, search_block, warps = config
    record = dict(divergence=divergence, arch=arch, block=block, warps=warps, hard=hard, dtype=dtype)
    constexprs = dict(DIV=DIVERGENCES.index(divergence), HARD=hard, BLOCK=block, SEARCH_BLOCK=search_block)
    try:
        compiled = triton.compile(
            ASTSource(fn=divergence_kernel, signature=signature(dtype), constexprs=constexprs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": warps},
        )
        record["cubin_bytes"] = len(compiled.asm["cubin"])
        record["registers"], record["spills"] = ptxas_usage(compiled.asm["ptx"])
    except Exception as error:  # reported to the test, which fails on it
        record["error"] = f"{type(error).__name__}: {error}"
    return record


def main() -> None:
    configs = sorted({launch_policy(v) for v in VOCABS})
    widest = configs[-1]
    jobs = [
        (divergence, arch, config, hard, dtype)
        for divergence, arch, config, hard in itertools.product(
            sys.argv[1:] or DIVERGENCES, (80, 90), configs, (False, True)
        )
        for dtype in (("bf16", "fp32") if config == widest else ("bf16",))
    ]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for record in pool.starmap(compile_one, jobs):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

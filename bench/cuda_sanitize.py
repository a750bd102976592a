"""Small calls of every cuda-backend kernel for ``compute-sanitizer`` (memcheck, racecheck), run by
bench/gpu_check_cuda.sh: each divergence at every cluster size with an invalid row, a NaN row and the
hard-label term. Default: the real plans (bf16 V = 1271 unaligned with cluster 1, 40000 → 2, 100000 → 4,
200000 → 8; fp32 and fp16 at V = 3001). ``--small``, with FASTKD_CUDA_CTA_BYTES=4096 set before the
call, reaches clusters 1, 2, 4 and 8 at V ≤ 8000 (racecheck is slow). Exits non-zero if a loss that
should be finite is not, or the NaN row's is not NaN."""

from __future__ import annotations

import sys

import torch

import fastkd.losses as L
from fastkd.boundary.options import DIVERGENCES

CASES = [(torch.bfloat16, 1271), (torch.bfloat16, 40000), (torch.bfloat16, 100000), (torch.bfloat16, 200000)]
CASES += [(torch.float32, 3001), (torch.float16, 3001)]
SMALL_CASES = [(torch.bfloat16, v) for v in (1000, 1500, 3001, 8000)] + [
    (torch.float32, 1001),
    (torch.float16, 777),
]


def run_case(divergence: str, dtype: torch.dtype, vocab: int) -> bool:
    gen = torch.Generator(device="cuda").manual_seed(vocab)
    student = (2 * torch.randn(4, vocab, device="cuda", generator=gen)).to(dtype).requires_grad_()
    teacher = (2 * torch.randn(4, vocab, device="cuda", generator=gen)).to(dtype)
    teacher[3, 0] = float("nan")
    labels = torch.tensor([0, -100, vocab - 1, 1], device="cuda")
    loss = L.kd_loss(
        student, teacher, divergence, labels=labels, hard_label_weight=0.1, reduction="none", backend="cuda"
    )
    loss.sum().backward()
    torch.cuda.synchronize()
    finite = bool(torch.isfinite(loss[:3]).all() and torch.isfinite(student.grad[:3]).all())
    return finite and bool(torch.isnan(loss[3]))


def main() -> int:
    cases = SMALL_CASES if "--small" in sys.argv else CASES
    failures = [(d, str(t), v) for d in DIVERGENCES for t, v in cases if not run_case(d, t, v)]
    print(f"cuda_sanitize: {len(DIVERGENCES) * len(cases)} calls, wrong results: {failures or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

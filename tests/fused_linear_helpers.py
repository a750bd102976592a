"""Cases and the oracle comparison of the fused-linear KD tests."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from tests.conftest import DEVICE
from tests.helpers import GRAD_TOL, HAS_CPU_EXTENSION, LOSS_TOL, TRITON_ONLY_BACKENDS, max_err
from tests.oracle_fused_linear import oracle_fused_linear

H_S, H_T = 8, 12
CPU_BACKEND = pytest.param(
    "cpu", marks=pytest.mark.skipif(not HAS_CPU_EXTENSION or DEVICE != "cpu", reason="needs fastkd._C on CPU")
)
BACKENDS = [*TRITON_ONLY_BACKENDS, CPU_BACKEND]
PARAMS = {
    "jsd": ("beta", 0.3),
    "skew_kl": ("alpha", 0.2),
    "skew_reverse_kl": ("alpha", 0.25),
    "akl": ("mu", 0.5),
}


def make_case(
    leading: tuple = (2, 5), vocab: int = 37, k: int = 5, seed: int = 0, spread: float = 1.0
) -> dict:
    """fp32 tensors of one call: student (h, W, b), teacher hidden/weight/bias, logits and a top-k cache."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return (spread * torch.randn(*shape, generator=g)).to(DEVICE)

    teacher_logits = 2.0 * randn(*leading, vocab)
    values, indices = teacher_logits.topk(k, dim=-1)
    logprobs = values - teacher_logits.logsumexp(-1, keepdim=True)
    return {
        "hidden": randn(*leading, H_S),
        "weight": randn(vocab, H_S) / H_S**0.5,
        "bias": randn(vocab),
        "teacher_hidden": randn(*leading, H_T),
        "teacher_weight": randn(vocab, H_T) / H_T**0.5,
        "teacher_bias": randn(vocab),
        "teacher_logits": teacher_logits,
        "topk": (indices, logprobs),
    }


def teacher_kwargs(case: dict, source: str, dtype: torch.dtype) -> dict:
    if source == "hidden":
        return {
            "teacher_hidden": case["teacher_hidden"].to(dtype),
            "teacher_weight": case["teacher_weight"].to(dtype),
            "teacher_bias": case["teacher_bias"].to(dtype),
        }
    if source == "logits":
        return {"teacher_logits": case["teacher_logits"].to(dtype)}
    if source == "none":
        return {}
    indices, logprobs = case["topk"]
    return {"teacher_topk_indices": indices, "teacher_topk_logprobs": logprobs}


def _oracle_teacher(kwargs: dict, source: str) -> dict:
    if source == "hidden":
        return {
            "source": ("hidden", kwargs["teacher_hidden"], kwargs["teacher_weight"], kwargs["teacher_bias"])
        }
    if source == "logits":
        return {"source": ("logits", kwargs["teacher_logits"])}
    if source == "none":
        return {"source": ("none",)}
    return {"source": ("topk", kwargs["teacher_topk_indices"], kwargs["teacher_topk_logprobs"])}


def _backward(loss: torch.Tensor, grad_output: float | torch.Tensor) -> None:
    loss.backward(torch.as_tensor(grad_output, dtype=loss.dtype, device=loss.device).expand_as(loss))


def run_fused(
    case: dict, backend: str, source: str, dtype: torch.dtype, grad_output: float, use_bias: bool, **options
):
    """(loss, grad hidden, grad weight, grad bias) of fastkd on ``case`` in ``dtype``."""
    leaves = [case[n].detach().to(dtype, copy=True).requires_grad_() for n in ("hidden", "weight", "bias")]
    bias = leaves[2] if use_bias else None
    loss = L.fused_linear_kd(
        leaves[0],
        leaves[1],
        student_bias=bias,
        backend=backend,
        **teacher_kwargs(case, source, dtype),
        **options,
    )
    _backward(loss, grad_output)
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]
    return loss.detach(), *grads


def run_exact(case: dict, source: str, dtype: torch.dtype, grad_output: float, use_bias: bool, **options):
    """The fp64 oracle on the same (dtype-rounded) inputs."""
    divergence = options.pop("divergence", "forward_kl")
    name = PARAMS.get(divergence, (None,))[0]
    param = options.pop(name, None) if name else None
    options.pop("chunk_size", None)
    options.pop("grad_weight_dtype", None)
    leaves = [
        case[n].detach().to(dtype).to(torch.float64, copy=True).requires_grad_()
        for n in ("hidden", "weight", "bias")
    ]
    teacher = {
        k: v.to(torch.float64) if v.is_floating_point() else v
        for k, v in teacher_kwargs(case, source, dtype).items()
    }
    student = (leaves[0], leaves[1], leaves[2] if use_bias else None)
    loss = oracle_fused_linear(student, _oracle_teacher(teacher, source), divergence, param=param, **options)
    _backward(loss, grad_output)
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]
    return loss.detach(), *grads


def assert_fused_matches_oracle(
    case: dict,
    backend: str,
    source: str = "hidden",
    dtype: torch.dtype = torch.float32,
    grad_output: float = 1.0,
    use_bias: bool = True,
    **options: object,
) -> None:
    """Loss and the three gradients within twice the torch backend's error (same dtype) of the fp64
    oracle, plus one rounding of the dtype (relative to the largest entry) and fp32's floor."""
    got = run_fused(case, backend, source, dtype, grad_output, use_bias, **options)
    exact = run_exact(case, source, dtype, grad_output, use_bias, **dict(options))
    base = (
        got
        if backend == "torch"
        else run_fused(case, "torch", source, dtype, grad_output, use_bias, **options)
    )
    for i, (x, ref, plain) in enumerate(zip(got, exact, base, strict=True)):
        assert not torch.isnan(x).any(), i
        if i > 0:
            assert x.dtype == dtype, (i, x.dtype)
        finite = torch.isfinite(ref)
        scale = ref[finite].abs().max().item() if finite.any() else 1.0
        tol = (LOSS_TOL if i == 0 else GRAD_TOL[dtype]) * scale + 64 * torch.finfo(torch.float32).eps * (
            1.0 + scale
        )
        allowed = 2 * (0.0 if backend == "torch" else max_err(plain, ref)) + tol
        assert max_err(x, ref) <= allowed, (["loss", "hidden", "weight", "bias"][i], max_err(x, ref), allowed)

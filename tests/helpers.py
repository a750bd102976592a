"""Shared test machinery: the dtype-keyed tolerance table and runners for fastkd and the fp64 oracle."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
import torch

import fastkd.losses as L
from fastkd.backends import cuda_kernels_available, extension_available
from tests.conftest import DEVICE
from tests.oracle import oracle_kd_loss

PARAM_NAME = {"jsd": "beta", "skew_kl": "alpha", "skew_reverse_kl": "alpha", "akl": "mu"}
TEST_PARAM = {"jsd": 0.3, "skew_kl": 0.2, "skew_reverse_kl": 0.25, "akl": 0.5}
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CPU_EXTENSION = extension_available()
# backend="cuda" runs where fastkd._C holds the cluster kernels and the GPU is sm_90 or newer.
HAS_CUDA_KERNELS = (
    cuda_kernels_available() and DEVICE == "cuda" and torch.cuda.get_device_capability()[0] >= 9
)
# The losses whose only fused kernels are Triton's (ranking): for them backend="cpu" is an error
# (tests/test_errors.py), so their tests run the torch and triton backends.
TRITON_ONLY_BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton")),
]
CPU_BACKEND = pytest.param(
    "cpu",
    marks=pytest.mark.skipif(
        not HAS_CPU_EXTENSION or DEVICE != "cpu", reason="needs CPU tensors and the built fastkd._C"
    ),
)
# The losses with Triton and C++ kernels but no cuda backend: TAID, sparse_kl, fused-linear.
TRITON_AND_CPU_BACKENDS = [*TRITON_ONLY_BACKENDS, CPU_BACKEND]
BACKENDS = [
    *TRITON_AND_CPU_BACKENDS,
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not HAS_CUDA_KERNELS, reason="needs an sm_90 GPU and fastkd._C built with its CUDA kernels"
        ),
    ),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# One tolerance table, keyed by the student's dtype: the gradient's absolute slack as a fraction of its
# largest entry (about one rounding of that dtype), and the fp32 loss's relative slack.
GRAD_TOL = {torch.float32: 2e-6, torch.bfloat16: 2**-8, torch.float16: 2**-10, torch.float64: 1e-12}
LOSS_TOL = 1e-5


def family_kwargs(divergence: str, value: float | None = None) -> dict[str, float]:
    if divergence not in PARAM_NAME:
        return {}
    return {PARAM_NAME[divergence]: TEST_PARAM[divergence] if value is None else value}


def run_fastkd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    divergence: str,
    backend: str,
    grad_output: torch.Tensor | float = 1.0,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, student gradient) of fastkd; ``options`` may hold the family parameter by its name."""
    z = student.detach().clone().requires_grad_()
    loss = L.kd_loss(z, teacher, divergence, backend=backend, **options)
    loss.backward(torch.as_tensor(grad_output, dtype=loss.dtype, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def run_oracle(
    student: torch.Tensor,
    teacher: torch.Tensor,
    divergence: str,
    grad_output: torch.Tensor | float = 1.0,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    name = PARAM_NAME.get(divergence)
    param = options.pop(name, None) if name else None
    z = student.detach().to(torch.float64).requires_grad_()
    loss = oracle_kd_loss(z, teacher.to(torch.float64), divergence, param=param, **options)
    loss.backward(torch.as_tensor(grad_output, dtype=torch.float64, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def max_err(x: torch.Tensor, exact: torch.Tensor) -> float:
    x = x.to(torch.float64)
    both_inf = torch.isinf(x) & torch.isinf(exact) & (torch.sign(x) == torch.sign(exact))
    return (x - exact).masked_fill(both_inf, 0.0).abs().max().item() if x.numel() else 0.0


def _fp32_floor(student: torch.Tensor, teacher: torch.Tensor, grad_output: object, options: dict) -> tuple:
    """(gradient, loss) error floors of fp32 arithmetic on these logits: eps32 · logit magnitude / T
    (growing as √V for long sums), times the per-token scale: |grad_output| / divisor for the
    gradient, N_valid / divisor for the loss."""
    t = float(options.get("temperature", 1.0))
    both = torch.cat([student.reshape(-1), teacher.reshape(-1)]).to(torch.float64)
    magnitude = 1.0 + both[torch.isfinite(both)].abs().max().item() / t
    valid = torch.ones(student.shape[:-1], dtype=torch.bool, device=student.device)
    if options.get("labels") is not None:
        valid &= options["labels"] != options.get("ignore_index", -100)
    if options.get("mask") is not None:
        valid &= options["mask"]
    n_valid = int(valid.sum())
    divisor = 1.0
    if options.get("reduction", "mean") == "mean":
        divisor = float(options.get("num_items_in_batch") or max(n_valid, 1))
    eps = 8 * torch.finfo(torch.float32).eps * magnitude * max(1.0, (student.shape[-1] / 1000) ** 0.5)
    g = torch.as_tensor(grad_output, dtype=torch.float64).abs().max().item()
    return eps * g / divisor / min(t, 1.0), eps * max(n_valid, 1) / divisor


def assert_matches_oracle(
    student: torch.Tensor,
    teacher: torch.Tensor,
    divergence: str,
    backend: str,
    grad_output: torch.Tensor | float = 1.0,
    **options: object,
) -> None:
    """The backend's loss and gradient are within twice plain PyTorch's error (same dtype) of the
    fp64 oracle, plus one rounding of the dtype and fp32's floor on these logits; no NaN anywhere."""
    assert_close_to_oracle(
        lambda b: run_fastkd(student, teacher, divergence, b, grad_output, **options),
        run_oracle(student, teacher, divergence, grad_output, **dict(options)),
        student,
        teacher,
        backend,
        grad_output,
        options,
    )


def assert_close_to_oracle(
    run: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
    exact: tuple[torch.Tensor, torch.Tensor],
    student: torch.Tensor,
    teacher: torch.Tensor,
    backend: str,
    grad_output: torch.Tensor | float,
    options: dict,
) -> None:
    """The tolerance rule of :func:`assert_matches_oracle` for any loss: ``run(backend)`` gives
    (loss, gradient), ``exact`` the fp64 oracle's; ``options`` the call's keyword options."""
    loss, grad = run(backend)
    exact_loss, exact_grad = exact
    assert loss.dtype == torch.float32 or student.dtype == torch.float64
    assert grad.dtype == student.dtype
    assert not torch.isnan(loss).any() and not torch.isnan(grad).any()
    base_loss, base_grad = (loss, grad) if backend == "torch" else run("torch")
    grad_floor, loss_floor = _fp32_floor(student, teacher, grad_output, options)
    scale = exact_grad.abs().max().item()
    grad_slack = GRAD_TOL[student.dtype] * scale + grad_floor
    base = 0.0 if backend == "torch" else max_err(base_grad, exact_grad)
    assert max_err(grad, exact_grad) <= 2 * base + grad_slack, (max_err(grad, exact_grad), base, grad_slack)
    finite = torch.isfinite(exact_loss)
    loss_slack = (
        LOSS_TOL * (1.0 + exact_loss[finite].abs().max().item() if finite.any() else 1.0) + loss_floor
    )
    base = 0.0 if backend == "torch" else max_err(base_loss, exact_loss)
    assert max_err(loss, exact_loss) <= 2 * base + loss_slack, (loss, exact_loss, loss_slack)


def compiled_and_eager(
    step: Callable[..., torch.Tensor], student: torch.Tensor, *args: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``step(student, *args).backward()`` in eager and under ``torch.compile(backend="aot_eager",
    fullgraph=True)``, each on its own copy of ``student``: (compiled loss, compiled grad, eager grad)."""
    eager_z = student.clone().requires_grad_()
    step(eager_z, *args).backward()
    compiled_z = student.clone().requires_grad_()
    loss = torch.compile(step, backend="aot_eager", fullgraph=True)(compiled_z, *args)
    loss.backward()
    return loss, compiled_z.grad, eager_z.grad


class ModelOutput(torch.autograd.Function):
    """Stands for a model's last layer: a non-leaf copy whose backward passes the gradient on as is."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad

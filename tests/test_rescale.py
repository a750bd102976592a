"""The backward rescale of the fused losses: ``grad *= grad_output`` in place, skipping factors of 1.

The Triton kernel runs under the interpreter here (on CUDA tensors the op launches it); the CPU branch
of the op is what the fused losses use on CPU. Both must equal a plain multiplication in fp32.
"""

from __future__ import annotations

import pytest
import torch

from fastkd.ops.rescale import RESCALE_BLOCK, launch_rescale, rescale_
from tests.conftest import DEVICE, assert_compiled_without_spills
from tests.helpers import HAS_TRITON

ROWS, VOCAB = 5, 2 * RESCALE_BLOCK + 37  # three column blocks, the last one partial


def gradient(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(ROWS, VOCAB, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)


def expected(grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    factor = scale if scale.dim() == 0 else scale[:, None]
    return (grad.float() * factor).to(grad.dtype)


def assert_kernel_result(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-equal, except that the interpreter's fp32 -> bf16 cast truncates where the GPU rounds to
    nearest: there a bf16 result may sit one unit in the last place towards zero."""
    if got.dtype != torch.bfloat16 or DEVICE == "cuda":
        assert torch.equal(got, want)
        return
    ulp = want.float().abs() * 2.0**-7
    assert ((got.float() - want.float()).abs() <= ulp).all()
    assert (got.float().abs() <= want.float().abs()).all()


SCALES = {
    "one": lambda: torch.tensor(1.0),
    "scalar": lambda: torch.tensor(-0.37),
    "per_row": lambda: torch.tensor([1.0, 2.5, 1.0, 0.0, -3.0]),
    "all_rows_one": lambda: torch.ones(ROWS),
}


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", sorted(SCALES))
def test_kernel_equals_a_multiplication(case, dtype):
    grad, scale = gradient(dtype), SCALES[case]().to(DEVICE)
    want = expected(grad, scale)
    launch_rescale(grad, scale)
    assert_kernel_result(grad, want)


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
def test_kernel_follows_the_row_stride():
    wide = torch.randn(ROWS, VOCAB + 11, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    grad, scale = wide[:, :VOCAB], SCALES["per_row"]().to(DEVICE)
    want, margin = expected(grad, scale), wide[:, VOCAB:].clone()
    launch_rescale(grad, scale)
    assert_kernel_result(grad, want)
    assert torch.equal(wide[:, VOCAB:], margin)


@pytest.mark.parametrize("case", sorted(SCALES))
def test_op_equals_a_multiplication(case):
    grad, scale = gradient(torch.bfloat16), SCALES[case]().to(DEVICE)
    want = expected(grad, scale)
    rescale_(grad, scale)
    assert torch.equal(grad, want)


def test_opcheck():
    grad, scale = gradient(torch.float32), SCALES["per_row"]().to(DEVICE)
    torch.library.opcheck(rescale_, (grad, scale))


def test_rescale_kernel_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "rescale")
    assert {r["dtype"] for r in mine} == {"bf16", "fp16", "fp32"}

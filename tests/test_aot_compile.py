"""Every divergence-kernel configuration the launcher can choose compiles for sm_80 and sm_90 without spills.

The Triton interpreter runs the kernels' arithmetic on CPU but not the compiler, so the session fixture
``aot_records`` (tests/conftest.py) compiles ahead of time for real GPUs (no GPU needed) and ptxas
reports registers and spills.
"""

import pytest

pytest.importorskip("triton")

from fastkd.boundary.options import DIVERGENCES
from fastkd.kernels import divergence as kd
from fastkd.ops.divergence import launch_policy
from tests.conftest import assert_compiled_without_spills


def test_kernel_ids_match_option_names():
    names = ("FORWARD_KL", "SOFT_CE", "REVERSE_KL", "JSD", "SKEW_KL", "SKEW_REVERSE_KL", "TVD", "AKL")
    assert [getattr(kd, n).value for n in names] == list(range(len(DIVERGENCES)))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_kernel_compiles_without_spills(aot_records, divergence):
    mine = assert_compiled_without_spills(aot_records, "divergence", divergence=divergence, caps=0)
    assert {r["hard"] for r in mine} == {False, True}
    assert {r["dtype"] for r in mine} == {"bf16", "fp32"}
    assert {r["write_grad"] for r in mine} == {True, False}


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("caps", (1, 2, 3))
def test_fused_linear_softcap_configurations_compile(aot_records, divergence, caps):
    """fp32 chunk logits with a student (1), teacher (2) or both (3) softcaps, fp32 or bf16 teacher,
    hard-label term on and off: no spills on sm_80 and sm_90."""
    mine = assert_compiled_without_spills(aot_records, "divergence", divergence=divergence, caps=caps)
    assert {(r["dtype"], r["teacher"]) for r in mine} == {("fp32", "fp32"), ("fp32", "bf16")}
    assert {r["hard"] for r in mine} == {False, True}
    config = launch_policy(151936, capped=True)
    assert {(r["block"], r["warps"]) for r in mine} == {(config.block, config.warps)}

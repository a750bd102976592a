"""Every TAID-kernel configuration the launcher can choose compiles for sm_80 and sm_90 without spills."""

import pytest

pytest.importorskip("triton")

from fastkd.ops.divergence import launch_policy
from tests.aot_divergence import VOCABS
from tests.conftest import assert_compiled_without_spills


@pytest.mark.parametrize("block", sorted({launch_policy(v).block for v in VOCABS}))
def test_taid_kernel_compiles_without_spills(aot_records, block):
    mine = assert_compiled_without_spills(aot_records, "taid", block=block)
    assert {r["dtype"] for r in mine} == {"bf16", "fp16", "fp32"}
    assert {r["write_grad"] for r in mine} == {True, False}

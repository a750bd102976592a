"""The vocabulary-parallel entries of the divergence, TAID and sparse kernels compile for sm_80 and sm_90
without spills (every phase; jobs in tests/aot_shard.py)."""

import pytest

pytest.importorskip("triton")

from fastkd.boundary.parallel import GRAD, ROW_SUM, STATS
from tests.conftest import assert_compiled_without_spills


def test_divergence_shard_entry_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "shard", kernel="divergence")
    assert {r["phase"] for r in mine} == {STATS, ROW_SUM, GRAD}


def test_taid_shard_entry_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "shard", kernel="taid")
    assert {r["phase"] for r in mine} == {STATS, GRAD}


def test_sparse_shard_entry_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "shard", kernel="sparse")
    assert {r["phase"] for r in mine} == {STATS, GRAD}

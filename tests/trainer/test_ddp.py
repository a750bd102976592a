"""DDP: 2 processes under torchrun (gloo) with batch B each equal 1 process with batch 2B: the same
student update, the same TAID schedule state on every rank, one summary (rank 0) with world_size;
the teacher cache the two ranks write reads back as the one-process cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_helpers import torchrun

from fastkd.trainer.lm.cache import load_cache
from tests.trainer import ddp_run


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_ranks_equal_one_process_with_the_doubled_batch(tmp_path, tiny_llama) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    ddp_run.main(str(one), 2 * 2, tiny_llama)
    out = torchrun(2, ddp_run.__file__, str(two), "2", tiny_llama)
    assert out.returncode == 0, out.stderr[-3000:]
    # HF's global token count, a local one fastkd all-reduces, and the global one through fused_linear
    for variant in ("global", "local", "fused"):
        _assert_same_run(one / variant, two / variant)
    _assert_same_cache(one / "cache", two / "cache")


def _assert_same_cache(one, two) -> None:
    meta_one, examples_one = load_cache(str(one))
    meta_two, examples_two = load_cache(str(two))
    assert [s["name"].split("-")[1] for s in meta_two["shards"]] == ["r000", "r000", "r001", "r001"]
    assert meta_two["num_examples"] == meta_one["num_examples"] == len(examples_two) == 7
    for a, b in zip(examples_one, examples_two, strict=True):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
        assert torch.equal(a["teacher_topk_indices"], b["teacher_topk_indices"])
        torch.testing.assert_close(a["teacher_topk_logprobs"], b["teacher_topk_logprobs"])


def _assert_same_run(one, two) -> None:
    ref = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in range(2)]
    for state in ranks:
        assert state["world_size"] == 2
        for name, update in ref["update"].items():
            err = (state["update"][name] - update).abs().max() / update.abs().max()
            assert err < 1e-3, (name, float(err))
        for key, value in ref["schedule"].items():
            torch.testing.assert_close(state["schedule"][key], value, rtol=1e-5, atol=1e-7)
        assert state["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    assert json.loads((one / "summary.json").read_text())["world_size"] == 1

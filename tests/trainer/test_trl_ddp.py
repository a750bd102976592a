"""fastkd's TRL GKD trainer under 2-process DDP (gloo, torchrun): the fused-linear path, whose student
side runs as DDP's forward, makes the logit path's update, and the ranks stay in sync."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.cli_helpers import torchrun

pytest.importorskip("trl")


def test_gkd_fused_linear_under_ddp_equals_the_logit_path(tmp_path) -> None:
    run = torchrun(2, "tests/trainer/trl_ddp_run.py", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for record in ranks:
        assert {record[fused]["wrapper"] for fused in (False, True)} == {"DistributedDataParallel"}
        assert record[True]["loss"] == pytest.approx(record[False]["loss"], rel=1e-5)
    for fused in (False, True):
        theirs, ours = ranks[0][fused]["update"], ranks[1][fused]["update"]
        for name, delta in theirs.items():  # DDP all-reduced every gradient, the lm_head's included
            torch.testing.assert_close(ours[name], delta, rtol=0, atol=1e-7, msg=name)
    for name, delta in ranks[0][False]["update"].items():
        assert delta.abs().max() > 0, name
        atol = 1e-4 * delta.abs().max().item() + 1e-7
        torch.testing.assert_close(ranks[0][True]["update"][name], delta, rtol=0, atol=atol, msg=name)

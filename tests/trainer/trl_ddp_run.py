"""Run by tests/trainer/test_trl_ddp.py under ``torchrun --nproc-per-node 2``: fastkd's TRL GKD trainer, one
step of batch 1 per rank on the logit path and then with ``fastkd_fused_linear``; each rank saves its
logged losses and parameter updates to ``OUT/rank{r}.pt``."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fastkd.integrations.trl import GKDConfig, GKDTrainer
from tests.trl_helpers import gkd_trainer, parameter_update


def main(out: str) -> None:
    torch.set_num_threads(1)
    record = {}
    for fused in (False, True):
        trainer = gkd_trainer(
            GKDTrainer,
            GKDConfig,
            f"{out}/fused{int(fused)}",
            fastkd_fused_linear=fused,
            fastkd_hard_label_weight=0.2,
            per_device_train_batch_size=1,
        )
        update = parameter_update(trainer)
        record[fused] = {
            "wrapper": type(trainer.model_wrapped).__name__,
            "loss": trainer.state.log_history[0]["loss"],
            "update": {name: delta for name, (delta, _) in update.items()},
        }
    torch.save(record, f"{out}/rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1])

"""A KeyboardInterrupt inside training saves the last completed step (TAID state included); resuming
from it gives the run that was never interrupted."""

import os

import pytest
import torch
from test_trainer import args, bert, sst2  # noqa: F401 (fixture)
from transformers import DataCollatorWithPadding, TrainerCallback

from fastkd.trainer import DistillationTrainer
from fastkd.trainer.interrupt import (
    TrainingInterrupted,
    interruptible_train,
    remove_checkpoints,
    resume_point,
)
from fastkd.trainer.models import tiny_tokenizer
from fastkd.trainer.trainer import LOSS_STATE_NAME


class RaiseAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _trainer(output, dataset) -> DistillationTrainer:
    a = args(
        output,
        loss_name="taid",
        loss_options={"total_steps": 6, "alpha": 0.05, "beta": 0.5},
        per_device_train_batch_size=2,
        max_steps=6,
        logging_steps=1,
        learning_rate=5e-3,
        seed=3,
        data_seed=3,
    )
    collate = DataCollatorWithPadding(tiny_tokenizer())
    return DistillationTrainer(
        model=bert(0), args=a, teacher_model=bert(1), train_dataset=dataset, data_collator=collate
    )


def test_interrupt_saves_and_resume_matches_the_uninterrupted_run(tmp_path, sst2) -> None:  # noqa: F811
    full = _trainer(tmp_path / "full", sst2)
    interruptible_train(full)
    interrupted = _trainer(tmp_path / "run", sst2)
    interrupted.add_callback(RaiseAt(3))
    with pytest.raises(TrainingInterrupted) as info:
        interruptible_train(interrupted)
    checkpoint = str(tmp_path / "run" / "checkpoint-3")
    assert info.value.checkpoint == checkpoint and info.value.step == 3
    assert os.path.isfile(os.path.join(checkpoint, LOSS_STATE_NAME))
    assert resume_point(str(tmp_path / "run"), "auto") == checkpoint
    resumed = _trainer(tmp_path / "run", sst2)
    interruptible_train(resumed, checkpoint)
    assert float(resumed.loss_fn.schedule.t) == pytest.approx(float(full.loss_fn.schedule.t), rel=1e-6)
    assert float(resumed.loss_fn.schedule.t) != pytest.approx(float(interrupted.loss_fn.schedule.t))
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    remove_checkpoints(str(tmp_path / "run"))
    assert resume_point(str(tmp_path / "run"), "auto") is None


def test_interrupt_before_the_first_step_saves_nothing(tmp_path, sst2) -> None:  # noqa: F811
    trainer = _trainer(tmp_path, sst2)

    class Early(TrainerCallback):
        def on_train_begin(self, *a, **kw) -> None:
            raise KeyboardInterrupt

    trainer.add_callback(Early())
    with pytest.raises(TrainingInterrupted) as info:
        interruptible_train(trainer)
    assert info.value.checkpoint is None and not any(
        p.startswith("checkpoint-") for p in os.listdir(tmp_path)
    )

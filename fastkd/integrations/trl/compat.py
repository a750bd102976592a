"""The TRL versions fastkd's subclasses are tested with, and the TRL internals they rely on.

The subclasses override ``GKDTrainer.compute_loss`` and ``DistillationTrainer._compute_loss`` and call
TRL's ``_get_last_hidden_state`` and ``_forward_redirection``. ``moved_internals`` lists what of that is
no longer where 1.16 had it (tests/integrations/test_trl_compat.py fails loudly on any); a TRL outside
the tested range gets a warning when a trainer is built.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import trl
from packaging.version import Version

TESTED_RANGE = (Version("1.16"), Version("1.17"))  # >= 1.16, < 1.17, as the trl extra pins it

# method: the parameter names TRL 1.16 gives it (self first), or None when only its presence matters.
GKD_INTERNALS: dict[str, tuple[str, ...]] = {
    "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
    "generalized_jsd_loss": (
        "student_logits",
        "teacher_logits",
        "labels",
        "beta",
        "temperature",
        "reduction",
        "num_items_in_batch",
    ),
    "training_step": ("self", "model", "inputs", "num_items_in_batch"),
}
DISTILLATION_INTERNALS: dict[str, tuple[str, ...]] = {
    "_compute_loss": ("self", "unwrapped_student", "inputs", "num_items_in_batch"),
    "_get_last_hidden_state": ("self", "unwrapped_model", "input_ids", "attention_mask", "logits_to_keep"),
    "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
}
# TRL's GKD compute_loss, which fastkd's replaces: the causal shift and the loss at T = 1 with beta.
GKD_LOSS_TEXT = ("student_outputs.logits[:, :-1, :]", 'inputs["labels"][:, 1:]', "beta=self.beta,")
# compute_loss of TRL's DistillationTrainer unpacks what _compute_loss returns and logs the entropy.
DISTILLATION_CALLER_TEXT = ("loss, entropy_sum, num_valid_tokens = self._forward_redirection(", '["entropy"]')


def tested_version(version: str) -> bool:
    low, high = TESTED_RANGE
    return low <= Version(version) < high


def check_trl() -> None:
    """Warn once per call site when the installed TRL is outside the tested range."""
    if not tested_version(trl.__version__):
        warnings.warn(
            f"fastkd.integrations.trl is tested with trl >= {TESTED_RANGE[0]}, < {TESTED_RANGE[1]}; found "
            f"{trl.__version__}. The subclasses override TRL internals that may have moved.",
            stacklevel=3,
        )


@contextmanager
def gathered_heads(*heads: torch.nn.Module) -> Iterator[None]:
    """Under DeepSpeed ZeRO-3, the heads' weights and biases gathered for a fused loss that reads them
    directly (TRL's ``maybe_gather_lm_head_ctx``, as TRL's own chunked loss does); a no-op otherwise."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    with ExitStack() as stack:
        for head in heads:
            stack.enter_context(maybe_gather_lm_head_ctx(head.weight, head.bias))
        yield


def _moved(cls: type, expected: dict[str, tuple[str, ...]]) -> list[str]:
    problems = []
    for name, params in expected.items():
        method = getattr(cls, name, None)
        if method is None:
            problems.append(f"{cls.__name__}.{name} is gone")
            continue
        found = tuple(inspect.signature(method).parameters)[: len(params)]
        if found != params:
            problems.append(f"{cls.__name__}.{name} takes {found}, expected {params}")
    return problems


def moved_internals() -> list[str]:
    """What of the TRL internals the subclasses override or call has changed (empty when none)."""
    from trl import DistillationTrainer
    from trl.experimental.gkd import GKDTrainer

    problems = _moved(GKDTrainer, GKD_INTERNALS) + _moved(DistillationTrainer, DISTILLATION_INTERNALS)
    from trl.trainer import utils

    if not hasattr(utils, "maybe_gather_lm_head_ctx"):
        problems.append("trl.trainer.utils.maybe_gather_lm_head_ctx is gone (ZeRO-3 head gathering)")
    problems += _missing_text(GKDTrainer.compute_loss, GKD_LOSS_TEXT)
    problems += _missing_text(DistillationTrainer.compute_loss, DISTILLATION_CALLER_TEXT)
    return problems


def _missing_text(method: object, texts: tuple[str, ...]) -> list[str]:
    source = inspect.getsource(method)
    return [f"{method.__qualname__} no longer contains {text!r}" for text in texts if text not in source]

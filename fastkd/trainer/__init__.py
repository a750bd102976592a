"""HuggingFace Transformers integration: ``DistillationTrainer``, ``DistillationArguments``, the loss
registry and the ``fastkd`` command line (``fastkd glue ...``, ``fastkd lm ...``).

Needs the ``trainer`` extra (``pip install fastkd[trainer]``); ``import fastkd`` does not import it.
"""

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.losses import available_losses, build_loss, register_loss
from fastkd.trainer.trainer import DistillationTrainer, load_teacher

__all__ = [
    "DistillationArguments",
    "DistillationTrainer",
    "available_losses",
    "build_loss",
    "load_teacher",
    "register_loss",
]

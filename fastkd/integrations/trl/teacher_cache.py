"""An offline teacher for fastkd's GKDTrainer: the top-k cache that ``fastkd lm cache-teacher`` writes.

TRL's GKD flow allows it on off-policy batches only (``lmbda=0``, ``seq_kd=False``): an on-policy
batch is generated during training, so no cache can hold its teacher. Batches built by the collator
returned here carry ``teacher_topk_indices`` / ``teacher_topk_logprobs``; the trainer then distils
from them (``sparse_kl``, forward KL on the renormalised top-k) and does not run the teacher.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset

from fastkd.trainer.lm.cache import load_cache
from fastkd.trainer.lm.data import LMCollator

COLUMNS = ("input_ids", "labels", "teacher_topk_indices", "teacher_topk_logprobs")


def cache_dataset(
    directory: str, pad_token_id: int, vocab_size: int | None = None, max_samples: int | None = None
) -> tuple[Dataset, LMCollator]:
    """The examples of the cache in ``directory`` as a ``datasets.Dataset`` (columns input_ids, labels,
    teacher_topk_indices, teacher_topk_logprobs) and the collator to pass as GKD's ``data_collator``
    (right padding with ``pad_token_id``; labels −100 on the prompt and the padding). ``vocab_size``,
    when given, must be the cache's teacher vocabulary."""
    meta, examples = load_cache(directory, max_samples)
    if vocab_size is not None and int(meta["vocab_size"]) != int(vocab_size):
        raise ValueError(
            f"the teacher cache {directory!r} has vocab_size {meta['vocab_size']} but the student has "
            f"{vocab_size}; distillation needs one vocabulary"
        )
    columns = {key: [_plain(example[key]) for example in examples] for key in COLUMNS}
    return Dataset.from_dict(columns), LMCollator(pad_token_id)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, torch.Tensor) else value

"""Tiny models, data and trainer builders for the TRL integration tests (offline, CPU, seconds)."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

LM_DATA = os.path.join(os.path.dirname(__file__), "fixtures", "lm.jsonl")
PROMPTS = ["the cat sat on", "a dog ran", "the movie was", "it is good"]
COMPLETIONS = ["the mat", "far away fast", "good", "not bad at all"]


def tokenizer() -> Any:
    from fastkd.trainer.models import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.eos_token = "[SEP]"
    tok.padding_side = "left"
    return tok


def causal_lm(seed: int, layers: int = 1, kind: str = "llama", sharp: float = 1.0, **config: Any) -> Any:
    """A tiny Llama, Gemma-2 or Cohere (from a config, random weights); ``sharp`` scales the lm_head."""
    from transformers import (
        CohereConfig,
        CohereForCausalLM,
        Gemma2Config,
        Gemma2ForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if kind == "gemma2":
        model = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, **config))
    elif kind == "cohere":
        model = CohereForCausalLM(CohereConfig(**common, **config))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, **config))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharp)
    return model


def gkd_collate(rows: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / labels (−100 on the prompt) and the left-padded prompts, as GKD reads."""
    tok = tokenizer()
    pad = tok.pad_token_id
    ids, labels, prompts = [], [], []
    for row in rows:
        prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        completion = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
        prompts.append(prompt)
    n, p = max(map(len, ids)), max(map(len, prompts))
    return {
        "input_ids": torch.tensor([x + [pad] * (n - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids]),
        "labels": torch.tensor([x + [-100] * (n - len(x)) for x in labels]),
        "prompts": torch.tensor([[pad] * (p - len(x)) + x for x in prompts]),
        "prompt_attention_mask": torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in prompts]),
    }


def dataset() -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS})


# The logit transforms under test: Gemma-2's softcap, Cohere's logit scale.
MODEL_EXTRAS: dict[str, dict[str, float]] = {
    "gemma2": {"final_logit_softcapping": 2.0},
    "cohere": {"logit_scale": 4.0},
}

COMMON_ARGS = dict(
    bf16=False,
    use_cpu=True,
    gradient_checkpointing=False,
    learning_rate=0.5,
    optim="sgd",
    per_device_train_batch_size=2,
    max_steps=1,
    report_to="none",
    logging_steps=1,
    save_strategy="no",
    seed=0,
)


def gkd_trainer(
    cls: type,
    config_cls: type,
    tmp: str,
    student: Any = None,
    data: tuple[Any, Any] | None = None,
    **args: Any,
) -> Any:
    """A GKD trainer (TRL's or fastkd's) on the tiny data, or ``data`` = (dataset, collator); off-policy
    unless ``lmbda`` says otherwise."""
    options = {**COMMON_ARGS, "max_new_tokens": 6, "lmbda": 0.0, **args}
    config = config_cls(output_dir=tmp, **options)
    student = causal_lm(0) if student is None else copy.deepcopy(student)
    return cls(
        model=student,
        teacher_model=causal_lm(1, 2, sharp=20.0),
        args=config,
        train_dataset=dataset() if data is None else data[0],
        processing_class=tokenizer(),
        data_collator=gkd_collate if data is None else data[1],
    )


def distillation_trainer(cls: type, config_cls: type, tmp: str, kind: str = "llama", **args: Any) -> Any:
    """A DistillationTrainer (TRL's or fastkd's): on-policy completions from ``generate``."""
    extra = MODEL_EXTRAS.get(kind, {})
    options = {**COMMON_ARGS, "max_completion_length": 6, "beta": 0.5, **args}
    return cls(
        model=causal_lm(0, kind=kind, **extra),
        teacher_model=causal_lm(1, 2, kind=kind, sharp=20.0, **extra),
        args=config_cls(output_dir=tmp, **options),
        train_dataset=dataset(),
        processing_class=tokenizer(),
    )


def parameter_update(trainer: Any) -> dict[str, tuple[torch.Tensor, float]]:
    """Train, then each parameter's (change from its initial value, largest |value|)."""
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    return {n: (p.detach() - before[n], p.abs().max().item()) for n, p in trainer.model.named_parameters()}


def assert_same_update(ours: dict[str, tuple], theirs: dict[str, tuple], rtol: float = 1e-4) -> None:
    """Every parameter moved the same: to ``rtol`` of its largest change, plus the fp32 rounding of the
    parameter's own size (the update is rounded into it)."""
    assert ours.keys() == theirs.keys()
    moved = 0
    for name, (delta, size) in theirs.items():
        scale = delta.abs().max().item()
        moved += scale > 0
        atol = rtol * scale + 2 * torch.finfo(torch.float32).eps * size
        torch.testing.assert_close(ours[name][0], delta, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    assert moved > len(theirs) // 2, "the step left most parameters unchanged: nothing compared"

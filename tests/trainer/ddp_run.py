"""A tiny causal-LM TAID distillation, for tests/trainer/test_ddp.py: run it under
``torchrun --nproc-per-node 2 tests/trainer/ddp_run.py OUT B [TEACHER]`` (B examples per rank and
step) or as ``python tests/trainer/ddp_run.py OUT 2B [TEACHER]`` (one process, the doubled batch).

Both see the same 2B examples of the shipped lm.jsonl in every one of their three optimizer steps (SGD,
constant learning rate), so they must end with the same student and the same TAID schedule state.
It trains three times, with HF's global token count (``OUT/global``), with a rank-local one that
fastkd all-reduces (``OUT/local``), and with the global count through ``fused_linear`` with
hard_label_weight 0.2 (``OUT/fused``: TAID's KD call and the teacher-free CE call). Each rank writes
``rank<r>.pt`` (the student's parameter updates, schedule state, logged losses); the run writes its
summary through ``fastkd.trainer.summary.write_summary`` (rank 0 only).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from fastkd.trainer import DistillationArguments, DistillationTrainer
from fastkd.trainer.distributed import world_size
from fastkd.trainer.lm.cache import cache_teacher
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.models import tiny_tokenizer
from fastkd.trainer.summary import write_summary

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "lm.jsonl")
EXAMPLES = 4


def llama(seed: int, vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def main(out: str, batch: int, teacher: str | None = None) -> None:
    """Both runs: HF's global token count (its default), then a rank-local one (our all-reduce); with
    a saved ``teacher``, also its top-4 cache of 7 examples in shards of 2 (``OUT/cache``)."""
    if "LOCAL_RANK" in os.environ:  # under torchrun: two processes share the cores
        torch.set_num_threads(1)
    for variant, average, fused in (("global", True, False), ("local", False, False), ("fused", True, True)):
        run(os.path.join(out, variant), batch, average, fused)
    if teacher is not None:
        cache_teacher(teacher, DATA, 4, os.path.join(out, "cache"), shard_size=2, max_samples=7)


def run(out: str, batch: int, average_tokens_across_devices: bool, fused: bool = False) -> None:
    tokenizer = tiny_tokenizer()
    examples = encode_all(read_jsonl(DATA, EXAMPLES), tokenizer, 64)
    args = DistillationArguments(
        output_dir=out,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        per_device_train_batch_size=batch,
        max_steps=3,
        logging_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        loss_name="taid",
        loss_options={"total_steps": 3, "alpha": 0.2, "beta": 0.5},
        temperature=1.5,
        seed=0,
        ddp_backend="gloo" if "LOCAL_RANK" in os.environ else None,
        average_tokens_across_devices=average_tokens_across_devices,
        fused_linear=fused,
        hard_label_weight=0.2 if fused else 0.0,
    )
    trainer = DistillationTrainer(
        model=llama(0, len(tokenizer)),
        args=args,
        teacher_model=llama(1, len(tokenizer)),
        task="causal_lm",
        train_dataset=Dataset.from_list(examples),
        data_collator=LMCollator(0),
    )
    initial = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    rank = int(os.environ.get("RANK", "0"))
    state = {
        "update": {k: v.detach() - initial[k] for k, v in trainer.model.named_parameters()},
        "schedule": trainer.loss_fn.state_dict(),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "world_size": world_size(),
    }
    torch.save(state, os.path.join(out, f"rank{rank}.pt"))
    write_summary(out, {"run": "ddp test"}, [{"run": "student", "loss": "taid"}])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])

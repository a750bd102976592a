"""Peak CPU memory of one causal-LM distillation step, unfused (``.logits``) against ``fused_linear``.

``python -m bench.fused_linear_trainer_memory`` prints a markdown table: a tiny Llama student and
teacher built from configs with V = 32000, one batch of 2 × 1024 tokens (2046 distilled positions),
``compute_loss`` + backward measured with the profiler's allocation events (bench/memory.py).
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.memory import measure
from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.trainer import DistillationTrainer

VOCAB, BATCH, LENGTH = 32000, 2, 1024


def _model(seed: int, hidden: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=LENGTH,
    )
    return LlamaForCausalLM(config)


def step_memory(fused: bool) -> tuple[int, float, float]:
    """(peak bytes, loss, seconds) of one compute_loss + backward."""
    student, teacher = _model(0, 64), _model(1, 128)
    ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with tempfile.TemporaryDirectory() as out:
        args = DistillationArguments(
            output_dir=out,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            fused_linear=fused,
            kd_backend="cpu",
        )
        trainer = DistillationTrainer(model=student, args=args, teacher_model=teacher, task="causal_lm")
        losses: list[float] = []

        def step() -> None:
            student.zero_grad(set_to_none=True)
            loss = trainer.compute_loss(student, dict(batch))
            loss.backward()
            losses.append(loss.item())

        step()
        student.zero_grad(set_to_none=True)
        start = time.perf_counter()
        use = measure(step, "cpu")
        return use.peak, losses[-1], time.perf_counter() - start


def main() -> None:
    rows = {
        name: step_memory(fused) for name, fused in (("unfused (.logits)", False), ("fused_linear", True))
    }
    print(f"CPU ({torch.get_num_threads()} threads), V = {VOCAB}, {BATCH}×{LENGTH} tokens, fp32, forward_kl")
    print("\n| step | peak MiB | loss | s (profiled) |\n|---|---:|---:|---:|")
    for name, (peak, loss, seconds) in rows.items():
        print(f"| {name} | {peak / 2**20:.0f} | {loss:.5f} | {seconds:.2f} |")
    ratio = rows["unfused (.logits)"][0] / rows["fused_linear"][0]
    print(f"\nunfused / fused peak: {ratio:.1f}×")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

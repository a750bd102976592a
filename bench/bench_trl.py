"""One training step of TRL's DistillationTrainer: TRL's chunked kernel against the fastkd subclass.

Run ``python -m pytest bench/bench_trl.py --benchmark-json=out.json`` (``make bench`` includes it).
Providers side by side, on the same models, batch and seed:

- ``trl-chunked``: ``trl.DistillationTrainer`` (TRL >= 1.16), whose loss is
  ``trl.kernels.chunked_divergence.ChunkedDivergenceFunction`` (4096 × 32768 tiles, both projections
  recomputed in backward; a torch tile path on CPU);
- ``fastkd``: ``fastkd.integrations.trl.DistillationTrainer``, whose loss is ``fused_linear_kd``
  (gradient in the forward pass) plus one no-grad student projection for the logged entropy.

A step is TRL's ``compute_loss`` (both backbones, the loss, the entropy metric) and ``backward`` on a
fixed batch of completions: generation and the optimizer step are the same code in both and are left
out. Models: Llama configs with random weights, student H_s, teacher H_t, 2 layers each, vocabulary V.
``FASTKD_BENCH_TRL`` = ``tokens:H_s:H_t:V`` (default CPU ``2048:256:512:32000``, CUDA
``8192:2048:4096:128256`` in bf16) picks the case. ``extra_info``: the loss's useful TFLOP/s
(2·N·V·(H_t + 3·H_s)) and the step's peak memory beyond what existed before it (``bench/memory.py``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, device_name, median_seconds
from bench.memory import measure
from bench.shapes import dtype_name

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[trl]')")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROVIDERS = ("trl-chunked", "fastkd")
DEFAULT_CASE = "8192:2048:4096:128256" if DEVICE == "cuda" else "2048:256:512:32000"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
ROUNDS, WARMUP_ROUNDS = (5, 1) if DEVICE == "cuda" else (3, 1)
SEQUENCES, PROMPT = 4, 16


def _case() -> tuple[int, int, int, int]:
    tokens, h_s, h_t, vocab = (int(x) for x in os.environ.get("FASTKD_BENCH_TRL", DEFAULT_CASE).split(":"))
    return tokens, h_s, h_t, vocab


def _llama(hidden: int, vocab: int, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).to(device=DEVICE, dtype=DTYPE)


def _trainer(provider: str, tmp: str, h_s: int, h_t: int, vocab: int) -> Any:
    from fastkd.integrations.trl import DistillationConfig, DistillationTrainer
    from fastkd.trainer.models import tiny_tokenizer

    classes = {"trl-chunked": (trl.DistillationTrainer, trl.DistillationConfig)}
    trainer_cls, config_cls = classes.get(provider, (DistillationTrainer, DistillationConfig))
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token, tokenizer.padding_side = "[SEP]", "left"
    args = config_cls(
        output_dir=tmp,
        bf16=DTYPE == torch.bfloat16,
        use_cpu=DEVICE == "cpu",
        gradient_checkpointing=False,
        report_to="none",
        beta=0.5,
    )
    student, teacher = _llama(h_s, vocab, 0), _llama(h_t, vocab, 1)
    from datasets import Dataset

    data = Dataset.from_dict({"prompt": ["a"]})
    return trainer_cls(
        model=student, teacher_model=teacher, args=args, train_dataset=data, processing_class=tokenizer
    )


def _batch(tokens: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    completion = tokens // SEQUENCES
    ids = lambda n: torch.randint(0, vocab, (SEQUENCES, n), generator=g).to(DEVICE)
    ones = lambda n: torch.ones(SEQUENCES, n, dtype=torch.long, device=DEVICE)
    return {
        "prompt_ids": ids(PROMPT),
        "prompt_mask": ones(PROMPT),
        "completion_ids": ids(completion),
        "completion_mask": ones(completion),
        "num_items_in_batch": torch.tensor(float(SEQUENCES * completion), device=DEVICE),
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trl_distillation_step(benchmark: BenchmarkFixture, provider: str, tmp_path) -> None:
    tokens, h_s, h_t, vocab = _case()
    trainer = _trainer(provider, str(tmp_path), h_s, h_t, vocab)
    trainer.model.train()
    batch = _batch(tokens, vocab)

    def step() -> None:
        trainer.compute_loss(trainer.model, dict(batch)).backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def fresh_gradients() -> None:
        trainer.model.zero_grad(set_to_none=True)

    step()
    fresh_gradients()
    memory = measure(step, DEVICE)
    benchmark.group = f"trl-step-N{tokens}-Hs{h_s}-Ht{h_t}-V{vocab}"
    benchmark.pedantic(step, setup=fresh_gradients, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    median = median_seconds(benchmark)
    flops = 2 * tokens * vocab * (h_t + 3 * h_s)
    benchmark.extra_info.update(
        provider=provider,
        case=f"trl-step-jsd-Hs{h_s}-Ht{h_t}",  # no "divergence" key: bench.report (GB/s tables) skips it
        N=tokens,
        V=vocab,
        dtype=dtype_name(DTYPE),
        device=device_name(),
        trl_version=trl.__version__,
        useful_tflops=flops / median / 1e12 if median else None,
        peak_mem_bytes=memory.peak,
        peak_mem_method=memory.method,
    )

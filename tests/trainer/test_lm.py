"""Causal-LM path: the teacher cache + sparse KL equals live-teacher training when K = V; bad input."""

import json
import os

import pytest
import torch
from conftest import LM_DATA, save_tiny_llama
from safetensors.torch import load_file

from fastkd.trainer.lm.cache import cache_teacher, load_cache, read_cache_meta
from fastkd.trainer.lm.data import read_jsonl
from fastkd.trainer.lm.run import LMJob, distill_lm


def _train(tmp_path, name: str, student: str, **kw) -> dict[str, torch.Tensor]:
    job = LMJob(
        output=str(tmp_path / name),
        student=student,
        max_steps=3,
        batch_size=4,
        learning_rate=0.5,
        temperature=1.0,
        seed=5,
        extra_args={"disable_tqdm": True, "optim": "sgd"},  # linear in the gradient
        **kw,
    )
    distill_lm(job)
    return load_file(os.path.join(job.output, "model.safetensors"))


def test_cache_with_k_equal_v_matches_live_teacher(tmp_path, tiny_llama) -> None:
    student = save_tiny_llama(str(tmp_path / "student"), layers=1, seed=1)
    vocab = json.load(open(os.path.join(tiny_llama, "config.json")))["vocab_size"]
    meta = cache_teacher(tiny_llama, LM_DATA, vocab, str(tmp_path / "cache"), shard_size=5)
    assert meta["num_examples"] == len(read_jsonl(LM_DATA)) and len(meta["shards"]) == 4
    _, examples = load_cache(str(tmp_path / "cache"))
    assert examples[0]["teacher_topk_logprobs"].shape[-1] == vocab
    torch.testing.assert_close(
        examples[0]["teacher_topk_logprobs"].exp().sum(-1), torch.ones(len(examples[0]["input_ids"]))
    )
    live = _train(tmp_path, "live", student, teacher=tiny_llama, data=LM_DATA, loss="forward_kl")
    cached = _train(tmp_path, "cached", student, teacher_cache=str(tmp_path / "cache"))
    initial = load_file(os.path.join(student, "model.safetensors"))
    assert any(not torch.equal(live[k], initial[k]) for k in live)
    for key in live:
        torch.testing.assert_close(cached[key], live[key], rtol=1e-4, atol=1e-5)


def test_lm_bad_input(tmp_path, tiny_llama) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_jsonl(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="expected keys"):
        read_jsonl(str(bad))
    with pytest.raises(ValueError, match="--top-k must be in"):
        cache_teacher(tiny_llama, LM_DATA, 10**6, str(tmp_path / "c"))
    with pytest.raises(ValueError, match="not a teacher cache"):
        read_cache_meta(str(tmp_path))
    with pytest.raises(ValueError, match="give --teacher PATH"):
        distill_lm(LMJob(output=str(tmp_path / "o"), student=tiny_llama, data=LM_DATA))
    with pytest.raises(ValueError, match="teacher not found"):
        distill_lm(
            LMJob(
                output=str(tmp_path / "o"), student=tiny_llama, teacher=str(tmp_path / "none"), data=LM_DATA
            )
        )
    other = save_tiny_llama(str(tmp_path / "wide"), layers=1, vocab_extra=7)
    with pytest.raises(ValueError, match="vocabulary size"):
        distill_lm(LMJob(output=str(tmp_path / "o"), student=other, teacher=tiny_llama, data=LM_DATA))
    cache_teacher(tiny_llama, LM_DATA, 4, str(tmp_path / "c4"), max_samples=2)
    with pytest.raises(ValueError, match="teacher cache vocabulary"):
        distill_lm(LMJob(output=str(tmp_path / "o"), student=other, teacher_cache=str(tmp_path / "c4")))
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        distill_lm(
            LMJob(
                output=str(tmp_path / "o"), student=tiny_llama, teacher_cache=str(tmp_path / "c4"), loss="tvd"
            )
        )
    with pytest.raises(ValueError, match="reads a teacher cache"):
        distill_lm(
            LMJob(
                output=str(tmp_path / "o"),
                student=tiny_llama,
                teacher=tiny_llama,
                data=LM_DATA,
                loss="sparse_kl",
            )
        )

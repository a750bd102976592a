"""Teacher, student and teacher cache must share one token -> id mapping, not just its size."""

import shutil

import pytest
from conftest import GLUE_DIR, LM_DATA, save_tiny_bert, save_tiny_llama, swap_tokenizer

from fastkd.trainer.glue.run import DistillSpec, GlueJob, distill
from fastkd.trainer.lm.cache import cache_teacher
from fastkd.trainer.lm.run import LMJob, distill_lm
from fastkd.trainer.models import tiny_tokenizer
from fastkd.trainer.vocab import UNSUPPORTED, check_same_vocabulary, vocabulary, vocabulary_sha256

CROSS = "cross-tokenizer distillation is not supported"


def test_fingerprint_and_comparison() -> None:
    vocab = vocabulary(tiny_tokenizer())
    swapped = {**vocab, "cat": vocab["dog"], "dog": vocab["cat"]}
    assert vocabulary_sha256(dict(reversed(list(vocab.items())))) == vocabulary_sha256(vocab)
    assert vocabulary_sha256(swapped) != vocabulary_sha256(vocab) and len(swapped) == len(vocab)
    check_same_vocabulary(vocab, dict(vocab))
    with pytest.raises(ValueError, match=r"2 mapped differently, e\.g\. 'cat': 104 vs 115") as info:
        check_same_vocabulary(vocab, swapped)
    assert UNSUPPORTED in str(info.value)


def test_lm_live_and_cached_teacher_refuse_another_tokenizer(tmp_path, tiny_llama) -> None:
    student = swap_tokenizer(save_tiny_llama(str(tmp_path / "student"), layers=1, seed=1))
    with pytest.raises(ValueError, match=CROSS):
        distill_lm(LMJob(output=str(tmp_path / "o"), student=student, teacher=tiny_llama, data=LM_DATA))
    cache_teacher(tiny_llama, LM_DATA, 4, str(tmp_path / "cache"), max_samples=2)
    with pytest.raises(ValueError, match=f"wrote the cache .*{CROSS}"):
        distill_lm(LMJob(output=str(tmp_path / "o"), student=student, teacher_cache=str(tmp_path / "cache")))


def test_glue_student_with_another_tokenizer(tmp_path, tiny_bert) -> None:
    student = swap_tokenizer(save_tiny_bert(str(tmp_path / "student")))
    job = GlueJob("sst2", str(tmp_path / "o"), GLUE_DIR, 8, 4, 32)
    with pytest.raises(ValueError, match=CROSS):
        distill(job, DistillSpec(tiny_bert, student=student))
    with pytest.raises(ValueError, match=CROSS):
        distill(job, DistillSpec(tiny_bert, student_layers=1, student_from=student))
    shutil.rmtree(tmp_path / "o", ignore_errors=True)

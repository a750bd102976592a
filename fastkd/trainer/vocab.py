"""Same tokens, same ids: distillation compares logits position by position over the vocabulary, so
the teacher, the student and a teacher cache must share one token -> id mapping (equal sizes are not
enough: Llama-2 and Mistral both have 32000 tokens)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

UNSUPPORTED = "cross-tokenizer distillation is not supported: use a student with the teacher's tokenizer"


def vocabulary(tokenizer: Any) -> dict[str, int]:
    """The token -> id mapping of a HuggingFace tokenizer (added tokens included)."""
    return dict(tokenizer.get_vocab())


def vocabulary_sha256(vocab: dict[str, int]) -> str:
    """A fingerprint of the mapping: sha256 of its (token, id) pairs sorted by id, as JSON."""
    pairs = sorted(vocab.items(), key=lambda item: (item[1], item[0]))
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def check_same_vocabulary(teacher: dict[str, int], student: dict[str, int], what: str = "student") -> None:
    """ValueError naming the first differences when the two mappings are not identical."""
    if teacher == student:
        return
    differ = sorted(
        (t for t in teacher.keys() | student.keys() if teacher.get(t) != student.get(t)),
        key=lambda t: (min(teacher.get(t, 1 << 62), student.get(t, 1 << 62)), t),
    )
    examples = ", ".join(f"{t!r}: {teacher.get(t)} vs {student.get(t)}" for t in differ[:3])
    raise ValueError(
        f"the teacher's and the {what}'s tokenizers differ ({len(teacher)} vs {len(student)} tokens, "
        f"{len(differ)} mapped differently, e.g. {examples}); {UNSUPPORTED}"
    )


def check_cache_vocabulary(cache_sha256: str, student: dict[str, int], cache: str) -> None:
    """The student's tokenizer has the vocabulary the teacher cache was written with."""
    if vocabulary_sha256(student) != cache_sha256:
        raise ValueError(
            f"the student's tokenizer differs from the teacher's that wrote the cache {cache!r} "
            f"(vocabulary sha256 {vocabulary_sha256(student)[:12]} vs {cache_sha256[:12]}); {UNSUPPORTED}"
        )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def has_tokenizer(path: str) -> bool:
    """Whether the model folder (or hub name) ``path`` comes with tokenizer files."""
    import os

    if not os.path.isdir(path):
        return True  # a hub name: its tokenizer is loaded (and any error reported) by from_pretrained
    return any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES)


def load_tokenizer(path: str, what: str) -> Any:
    """``AutoTokenizer.from_pretrained(path)``; a one-line ValueError naming ``what`` on failure."""
    from transformers import AutoTokenizer

    from fastkd.trainer.preflight import first_line

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot load the {what}'s tokenizer from {path!r}: {first_line(err)}") from None


def check_student_tokenizer(teacher_tokenizer: Any, student_path: str | None) -> None:
    """When the student's folder has a tokenizer, it must map tokens to ids as the teacher's does."""
    if student_path is not None and has_tokenizer(student_path):
        student = load_tokenizer(student_path, "student")
        check_same_vocabulary(vocabulary(teacher_tokenizer), vocabulary(student))

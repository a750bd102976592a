"""Shared fixtures of the trainer tests: tiny BERT / Llama models saved with the shipped tiny tokenizer."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# Without the `trainer` extra (transformers, datasets) these tests are not collected.
if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("datasets") is None:
    collect_ignore_glob = ["test_*.py"]

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
GLUE_DIR = os.path.join(FIXTURES, "glue")
LM_DATA = os.path.join(FIXTURES, "lm.jsonl")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def save_tiny_bert(path: str, num_labels: int = 2, layers: int = 2, seed: int = 0) -> str:
    from transformers import BertForSequenceClassification

    from fastkd.trainer.models import tiny_bert_config, tiny_tokenizer

    torch.manual_seed(seed)
    config = tiny_bert_config(num_labels=num_labels, layers=layers)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertForSequenceClassification(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def save_tiny_llama(
    path: str, layers: int = 2, seed: int = 0, vocab_extra: int = 0, tied: bool = False
) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from fastkd.trainer.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + vocab_extra,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tied,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def swap_tokenizer(path: str) -> str:
    """Overwrite the tokenizer in ``path`` with the tiny one whose tokens 'cat' and 'dog' swap ids:
    same size, different mapping."""
    import inspect

    from transformers import BertTokenizerFast

    from fastkd.trainer.models import TINY_VOCAB

    words = open(TINY_VOCAB, encoding="utf-8").read().splitlines()
    i, j = words.index("cat"), words.index("dog")
    words[i], words[j] = words[j], words[i]
    vocab = os.path.join(path, "swapped_vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(words) + "\n")
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    BertTokenizerFast(**{key: vocab}, do_lower_case=True).save_pretrained(path)
    os.remove(vocab)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_bert(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(str(tmp_path_factory.mktemp("tiny_llama")))

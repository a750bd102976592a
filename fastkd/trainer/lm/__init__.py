"""Causal-LM distillation: jsonl data with response-only masks, an offline teacher top-k cache, runs."""

"""GLUE: tasks and data (TSV or HuggingFace datasets), metrics, per-task presets, runs."""

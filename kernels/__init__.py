"""Triton kernel bodies (installed as ``fastkd.kernels``); nothing here imports from fastkd."""

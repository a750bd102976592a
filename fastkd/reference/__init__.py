"""The pure-PyTorch version of every loss, one module per family: the ``torch`` backend, the
benchmarks' baseline and readable documentation of what the fused kernels compute."""

"""The boundary of the library, in one place: input checks, flattening and the frozen option
dataclasses that every backend of a loss family shares (``options`` and ``inputs`` for the divergence
family and the losses built on it, ``sparse`` for the top-k teacher, ``sinkhorn`` for SinKD)."""

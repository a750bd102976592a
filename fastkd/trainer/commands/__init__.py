"""The command groups of the ``fastkd`` command, one module each, with ``register(groups)``.

A module adds its parser to the top-level sub-parsers and sets, on every sub-command, ``handler``
(called with the parsed arguments) and ``extra`` (the pip extra it needs, or None). Modules import
nothing heavy at the top: parsing must stay fast.
"""

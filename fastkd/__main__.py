"""``python -m fastkd``: the same as the ``fastkd`` command."""

import sys

from fastkd.trainer.cli import main

sys.exit(main())

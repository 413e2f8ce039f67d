"""``python launch/import_checkpoint.py`` = ``hpt-import-checkpoint``: runs :mod:`hpt_jax.commands.import_checkpoint` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import import_checkpoint  # noqa: E402

if __name__ == "__main__":
  import_checkpoint.run()

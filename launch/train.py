"""``python launch/train.py`` = ``hpt-train``: runs :mod:`hpt_jax.commands.train` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import train  # noqa: E402

if __name__ == "__main__":
  train.run()

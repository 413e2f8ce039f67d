"""``python launch/evaluate.py`` = ``hpt-evaluate``: runs :mod:`hpt_jax.commands.evaluate` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import evaluate  # noqa: E402

if __name__ == "__main__":
  evaluate.run()

"""``python launch/prepare_data.py`` = ``hpt-prepare-data``: runs :mod:`hpt_jax.commands.prepare_data` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import prepare_data  # noqa: E402

if __name__ == "__main__":
  prepare_data.run()

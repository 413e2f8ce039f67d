"""``python launch/transfer.py`` = ``hpt-transfer``: runs :mod:`hpt_jax.commands.transfer` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import transfer  # noqa: E402

if __name__ == "__main__":
  transfer.run()

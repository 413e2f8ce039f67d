"""``python launch/prepare_faces.py`` = ``hpt-prepare-faces``: runs :mod:`hpt_jax.commands.prepare_faces` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import prepare_faces  # noqa: E402

if __name__ == "__main__":
  prepare_faces.run()

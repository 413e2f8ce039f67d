"""``python launch/fetch_models.py`` = ``hpt-fetch-models``: runs :mod:`hpt_jax.commands.fetch_models` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import fetch_models  # noqa: E402

if __name__ == "__main__":
  fetch_models.run()

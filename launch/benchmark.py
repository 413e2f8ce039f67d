"""``python launch/benchmark.py`` = ``hpt-benchmark``: runs :mod:`hpt_jax.commands.benchmark` from a checkout.

See that module (or ``--help``) for the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.commands import benchmark  # noqa: E402

if __name__ == "__main__":
  benchmark.run()

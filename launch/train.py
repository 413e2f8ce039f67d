r"""Trains a pose-transfer model: ``python launch/train.py --config=configs/deepfashion_drn.py --workdir=DIR``.

Flags:
  --config   an ml_collections config file, optionally ``file.py:preset``; any field can be
             overridden, e.g. ``--config.batch_size=16 --config.model.ngf=32``.
  --workdir  run folder: checkpoints, TensorBoard events, samples and config.json. A rerun with
             the same workdir resumes from its latest checkpoint.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from hpt_jax import parallel, registry, runs  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, events, samples).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from hpt_jax.train import loop
  runs.quiet_library_logs()
  parallel.maybe_initialize_distributed()
  config = _CONFIG.value
  try:
    family = registry.get(config.model_name)
  except registry.UnknownFamilyError as e:
    raise app.UsageError(str(e)) from None
  module = family.train_module()
  logging.info("training %s in %s", config.model_name, _WORKDIR.value)
  from input_pipeline.patn_format import DataError
  from hpt_jax.weights import WeightsError, WeightsNotFoundError
  try:
    module.train_and_evaluate(config, _WORKDIR.value)
  except (DataError, WeightsError, WeightsNotFoundError, loop.NonFiniteLossError) as e:
    # Errors about the user's data, weights or a diverged run: the message says what and where.
    logging.error("%s: %s", type(e).__name__, e)
    print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)

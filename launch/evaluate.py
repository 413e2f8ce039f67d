r"""Evaluates a trained checkpoint: ``python launch/evaluate.py --config=configs/deepfashion_drn.py[:preset] --workdir=DIR``.

Restores the latest (or ``--step``) checkpoint of ``DIR/checkpoints/<model_name>/``, generates
every pair of ``config.eval_data`` and writes to ``DIR/eval/<model_name>_<step>/``: ``images/``
(``<from>___<to>.png`` at the data's stored resolution), ``panels/`` (``--panels``),
``metrics.json``, ``metrics.md`` and ``per_pair.csv``. Protocols: ``docs/evaluation.md``.

Flags:
  --config      the config the run was trained with, ``file.py[:preset]`` plus the same overrides
                (e.g. ``--config.eval_data.pairs=...`` to evaluate another pairs list).
  --workdir     the run folder.
  --step        checkpoint step (default: the latest).
  --panels      also write PATN-style panels (source | source pose | target | target pose | generated).
  --batch_size  pairs per jitted batch (default: config.batch_size).
  --max_pairs   only the first N pairs (a quick look).
  --[no]pckh    run the pose estimator for PCKh (default true; needs `python launch/fetch_models.py`).
  --[no]fid     compute FID (and IS) with the FID Inception-v3 (default true; weights from
                `python launch/fetch_models.py`).
  --inception_weights     converted FID Inception weights (default $HPT_JAX_INCEPTION_WEIGHTS or
                          ~/.cache/hpt_jax/inception_v3_fid.npz).
  --inception_fc_weights  Inception classifier weights for the Inception Score (default
                          $HPT_JAX_INCEPTION_FC_WEIGHTS; no package ships them: IS is n/a without).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from hpt_jax import runs  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the run was trained with.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding checkpoints/<model_name>/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_PANELS = flags.DEFINE_bool("panels", False, "Also write PATN-style panels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Pairs per batch (default config.batch_size).")
_MAX_PAIRS = flags.DEFINE_integer("max_pairs", None, "Only the first N pairs.")
_PCKH = flags.DEFINE_bool("pckh", True, "Run the pose estimator (PCKh, keypoint error curves).")
_FID = flags.DEFINE_bool("fid", True, "Compute FID (and IS) with the FID Inception-v3.")
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    "inception_weights", None, "Converted FID Inception weights (.npz; default "
    "$HPT_JAX_INCEPTION_WEIGHTS or ~/.cache/hpt_jax/inception_v3_fid.npz).")
_INCEPTION_FC_WEIGHTS = flags.DEFINE_string(
    "inception_fc_weights", None, "Inception classifier weights for IS (.npz kernel [2048,1008] "
    "or a PyTorch checkpoint with fc.weight; default $HPT_JAX_INCEPTION_FC_WEIGHTS).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runs.quiet_library_logs()
  from hpt_jax import evaluation
  from input_pipeline.patn_format import DataError
  try:
    result = evaluation.evaluate(_CONFIG.value, _WORKDIR.value, step=_STEP.value,
                                 panels=_PANELS.value, batch_size=_BATCH_SIZE.value,
                                 max_pairs=_MAX_PAIRS.value, pckh=_PCKH.value, fid=_FID.value,
                                 inception_weights=_INCEPTION_WEIGHTS.value,
                                 inception_fc_weights=_INCEPTION_FC_WEIGHTS.value)
  except (evaluation.CheckpointNotFoundError, evaluation.ConfigMismatchError,
          evaluation.UnsupportedModelError, DataError, FileNotFoundError) as e:
    logging.error("%s: %s", type(e).__name__, e)
    print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"{result['num_pairs']} pairs, step {result['checkpoint']['step']}: {result['output_dir']}")
  print(evaluation.markdown_table(result))


if __name__ == "__main__":
  app.run(main)

r"""Evaluates a trained model of any family, or compares evaluated runs.

Usage::

  python launch/evaluate.py --config=deepfashion_drn:cpu --workdir=runs/drn_cpu
  python launch/evaluate.py --config=deepfashion_hpn:cpu --workdir=runs/hpn_cpu [--level=1]
  python launch/evaluate.py --config=deepfashion_diaf:cpu --workdir=runs/diaf_cpu
  python launch/evaluate.py --compare=runs/drn_cpu,runs/hpn_cpu,runs/diaf_cpu [--output_dir=DIR]

Evaluate: restores the model of ``config.model_name`` (:func:`hpt_jax.inference.load`: DRN
``checkpoints/drn/``, HPN its levels, DIAF its phases; or an exported model folder), generates every
pair of ``config.eval_data`` and writes to ``DIR/eval/<tag>/``: ``images/`` (``<from>___<to>.png`` at
the data's stored resolution), ``panels/`` (``--panels``), ``metrics.json``, ``metrics.md`` and
``per_pair.csv``. Protocols: ``docs/evaluation.md``.

Compare: one table (``compare.md``, ``compare.json`` in ``--output_dir``, default the current
folder) with a row per run — its final output — and the source-copied and ground-truth baselines;
each path is an evaluation folder, its ``metrics.json`` or a run folder (its newest evaluation).
Runs evaluated on other pair lists or stored sizes are refused, naming the difference.

Flags:
  --config      the config the run was trained with, ``file.py[:preset]`` plus the same overrides
                (e.g. ``--config.eval_data.pairs=...`` to evaluate another pairs list). Default: the
                run's ``DIR/config.json`` (what training resolved; no overrides then).
  --workdir     the run folder (or an exported model folder).
  --step        checkpoint step of the final network (default: the latest).
  --level       HPN: level index scored as the model (default: the highest trained; -1 = last).
  --panels      also write PATN-style panels (source | source pose | target | target pose | generated).
  --batch_size  pairs per jitted batch (default: config.batch_size).
  --max_pairs   only the first N pairs (a quick look).
  --[no]pckh    run the pose estimator for PCKh (default true; needs `python launch/fetch_models.py`).
  --[no]fid     compute FID (and IS) with the FID Inception-v3 (default true; weights from
                `python launch/fetch_models.py`).
  --[no]retrieval  retrieval recall@3/5/10 with the Inception (needs --fid) and VGG-16 backbones
                (DRN Table V; default true).
  --[no]faces   face identity and the face keypoint error curve with dlib (DRN Table IV; default
                true; n/a without the `faces` extra: pip install 'hpt-jax[faces]').
  --[no]hands   hand keypoint error curves with MediaPipe's palm detector and hand-landmark model
                (DRN Fig. 7, thresholds 10/20/40 px; default true; n/a without the models:
                `python launch/fetch_models.py`).
  --face_workdir DRN: a face-module run (``--config=deepfashion_drn_face``, DRN Eq. 2) blended in for the
                face pairs of the face cache next to eval_data.annotations; the table gets the rows
                "model (refined + face module)" and "refined (no face module)" and says how many
                outputs used it (docs/evaluation.md).
  --inception_weights     converted FID Inception weights (default $HPT_JAX_INCEPTION_WEIGHTS or
                          ~/.cache/hpt_jax/inception_v3_fid.npz).
  --inception_fc_weights  Inception classifier weights for the Inception Score (default
                          $HPT_JAX_INCEPTION_FC_WEIGHTS; no package ships them: IS is n/a without).
  --compare     comma-separated evaluated runs to put in one table (no --config/--workdir needed).
  --output_dir  evaluate: default DIR/eval/<tag>; compare: where compare.md/compare.json go (default .).
"""

import os

from absl import flags, logging
from ml_collections import config_flags

from hpt_jax import cli, runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the run was trained with.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding checkpoints/ (or an exported model).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of the final network (default: the latest).")
_LEVEL = flags.DEFINE_integer("level", None, "HPN: level index scored as the model (default: highest trained).")
_PANELS = flags.DEFINE_bool("panels", False, "Also write PATN-style panels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Pairs per batch (default config.batch_size).")
_MAX_PAIRS = flags.DEFINE_integer("max_pairs", None, "Only the first N pairs.")
_PCKH = flags.DEFINE_bool("pckh", True, "Run the pose estimator (PCKh, keypoint error curves).")
_FID = flags.DEFINE_bool("fid", True, "Compute FID (and IS) with the FID Inception-v3.")
_RETRIEVAL = flags.DEFINE_bool("retrieval", True, "Retrieval recall@3/5/10 (Inception and VGG-16 backbones).")
_FACES = flags.DEFINE_bool("faces", True, "Face identity and face keypoint curve with dlib (the `faces` extra).")
_HANDS = flags.DEFINE_bool("hands", True, "Hand keypoint error curves with MediaPipe's hand models.")
_FACE_WORKDIR = flags.DEFINE_string("face_workdir", None, "DRN: a face-module run (deepfashion_drn_face) to blend in "
                                    "(rows with and without it).")
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    "inception_weights", None, "Converted FID Inception weights (.npz; default "
    "$HPT_JAX_INCEPTION_WEIGHTS or ~/.cache/hpt_jax/inception_v3_fid.npz).")
_INCEPTION_FC_WEIGHTS = flags.DEFINE_string(
    "inception_fc_weights", None, "Inception classifier weights for IS (.npz kernel [2048,1008] "
    "or a PyTorch checkpoint with fc.weight; default $HPT_JAX_INCEPTION_FC_WEIGHTS).")
_COMPARE = flags.DEFINE_list("compare", None, "Evaluated runs (eval folders, metrics.json or run folders) "
                             "to put in one table.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Evaluate: output folder (default DIR/eval/<tag>); "
                                  "compare: folder for compare.md/compare.json (default .).")


def main(argv):
  del argv  # cli.run rejects extra arguments
  runs.quiet_library_logs()
  from hpt_jax import evaluation
  if _COMPARE.value:
    result = evaluation.compare(_COMPARE.value)
    path = evaluation.write_compare(result, _OUTPUT_DIR.value or ".")
    print(result["markdown"])
    print(f"written to {path}")
    return
  if _WORKDIR.value is None:
    raise cli.UsageError("--workdir is required (or --compare=DIR_A,DIR_B,...)")
  config = _CONFIG.value
  if config is None:
    config = runs.load_config_json(_WORKDIR.value)
    if config is None:
      raise cli.UsageError(f"--config is required: {_WORKDIR.value} has no config.json")
    logging.info("config read from %s", os.path.join(_WORKDIR.value, "config.json"))
  result = evaluation.evaluate(config, _WORKDIR.value, step=_STEP.value, level=_LEVEL.value,
                               panels=_PANELS.value, batch_size=_BATCH_SIZE.value,
                                 max_pairs=_MAX_PAIRS.value, pckh=_PCKH.value, fid=_FID.value,
                                 inception_weights=_INCEPTION_WEIGHTS.value,
                                 inception_fc_weights=_INCEPTION_FC_WEIGHTS.value,
                                 output_dir=_OUTPUT_DIR.value, retrieval=_RETRIEVAL.value,
                                 faces=_FACES.value, hands=_HANDS.value, face_workdir=_FACE_WORKDIR.value)
  print(f"{result['num_pairs']} pairs, {result['description']}: {result['output_dir']}")
  print(evaluation.markdown_table(result))


def run() -> None:
  """Console script ``hpt-evaluate`` (and ``python launch/evaluate.py``)."""
  cli.run(main, config_flag=_CONFIG, doc=__doc__)


if __name__ == "__main__":
  run()

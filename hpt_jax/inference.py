"""One inference interface for every family: restore a model, generate in the stored frame.

::

    from hpt_jax import inference
    model = inference.load(config, "runs/drn_cpu")              # latest checkpoint
    out = model.generate(source_image, source_keypoints, target_keypoints)
    out["image"]        # uint8 [H, W, 3] at the data's stored size (256×176 for DeepFashion)
    out["coarse"]       # DRN's coarse output, same frame

**Inputs** (one pair, or a batch with a leading axis): the source image at the dataset's stored
size ``config.data.stored_size`` (H, W) — uint8 in [0, 255] or float in [-1, 1] — and the source
and target keypoints, float ``[18, 2]`` (y, x) pixels of that image in OpenPose-18 order, −1 =
missing. **Outputs**: ``image`` (the family's final output) and its intermediates by name, all at
the stored size: images uint8 ``[B, H, W, 3]``; DIAF's ``flow`` float32 ``[B, H, W, 2]`` (dx, dy)
stored-frame pixels pointing target → source (zero on background), ``visibility`` int32
``[B, H, W]`` (0 visible, 1 invisible, 2 background).

**Framing** happens inside, on the host with the training pipeline's own functions
(:func:`hpt_jax.input_pipeline.pipeline.frame_image`: DRN and HPN resize to the network size, DIAF pads
176-wide images with white to 256 then resizes), so a model sees exactly what it saw in training;
outputs go back with the inverse (bilinear resize, ``jax.image.resize`` with half-pixel centres,
then the padding cropped; flow vectors scaled to stored pixels; visibility nearest-neighbour).
Generation is batched (``batch_size`` pairs per call, the last batch padded), jitted, with the
variables replicated and the batch split over all local devices (:mod:`hpt_jax.parallel`).

**Restoring** (:func:`load`): from a training workdir — DRN ``checkpoints/drn/``, HPN every
``checkpoints/level_<H>x<W>/`` (the final level's output is ``image``, earlier levels are the
intermediates ``level_<H>x<W>``, upsampled), DIAF ``flow`` + ``generator`` + ``pixel_warp`` (a run
whose later phases have no checkpoint yet gives what its phases can: flow only → the flow-warped
source is ``image``; flow + generator → the generator's output). Only ``params`` and
``batch_stats`` of the generating networks are read (Orbax partial restore,
:func:`hpt_jax.checkpoints.restore_partial`): no optimiser state, discriminator or data iterator.

**Inference-only layout** (:func:`export`, read back by :func:`load` / :func:`load_exported`):
``DIR/inference.json`` (format, family, the full config, stored size, networks, where the weights
came from) and ``DIR/variables/`` (one Orbax PyTree ``{network: {'params', 'batch_stats'?}}``;
HPN's networks are its levels ``level_<H>x<W>``). A checkpoint importer writes this layout.

Imports nothing from ``hpt_jax.train``.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from hpt_jax import checkpoints, errors, image_io, parallel, pose, registry, runs
from hpt_jax.input_pipeline import pipeline

EXPORT_FORMAT = "hpt_jax-inference"
EXPORT_VERSION = 1

CheckpointNotFoundError = checkpoints.CheckpointNotFoundError


class ConfigMismatchError(checkpoints.CheckpointMismatchError):
  """The checkpoint was trained with another model config; the message lists the differences."""


#: The config lacks a field inference needs (e.g. ``data.stored_size`` in a run recorded before the
#: field existed); the message names it and the override that fixes it.
ConfigError = errors.ConfigError


class InputError(errors.UserError, ValueError):
  """A generate() input has the wrong shape, size or dtype; the message names it and what is expected."""


def _mismatch_message(directory: str, workdir: str, details: str) -> str:
  return (f"checkpoint in {directory} does not match this config (trained with another preset? "
          f"use the --config[:preset] and overrides the run was trained with; "
          f"{os.path.join(workdir, 'config.json')} records them): {details}")


def _stored_size(config) -> tuple[int, int]:
  for block in ("eval_data", "data"):
    size = pipeline.stored_size(config[block]) if block in config else None
    if size is not None:
      return size
  raise ConfigError("config.data.stored_size is missing (a run recorded before the field existed?): pass "
                    "--config=<the run's config file> or set it to the (H, W) of the image files, e.g. "
                    "--config.data.stored_size=256,176")


def _to_stored_image(x: jax.Array, stored: tuple[int, int], pad_to_width: int) -> jax.Array:
  """[B, h, w, 3] float model-frame image → uint8 [B, H, W, 3] in the stored frame (see module doc)."""
  left, padded = pipeline.frame_padding(stored, pad_to_width)
  x = jnp.clip(x.astype(jnp.float32), -1.0, 1.0)
  if tuple(x.shape[1:3]) != (stored[0], padded):
    x = jax.image.resize(x, (x.shape[0], stored[0], padded, x.shape[3]), method="linear")
  return image_io.quantize(x[:, :, left:left + stored[1]]).astype(jnp.uint8)


def _to_stored_flow(flow: jax.Array, stored: tuple[int, int], pad_to_width: int) -> jax.Array:
  """[B, h, w, 2] (dx, dy) model pixels → [B, H, W, 2] stored pixels (resized, vectors scaled, cropped)."""
  left, padded = pipeline.frame_padding(stored, pad_to_width)
  h, w = flow.shape[1:3]
  scale = jnp.array([padded / w, stored[0] / h], jnp.float32)
  flow = flow.astype(jnp.float32) * scale
  if (h, w) != (stored[0], padded):
    flow = jax.image.resize(flow, (flow.shape[0], stored[0], padded, 2), method="linear")
  return flow[:, :, left:left + stored[1]]


def _to_stored_labels(labels: jax.Array, stored: tuple[int, int], pad_to_width: int) -> jax.Array:
  """[B, h, w] int labels → [B, H, W] int32 (nearest neighbour, cropped)."""
  left, padded = pipeline.frame_padding(stored, pad_to_width)
  if tuple(labels.shape[1:3]) != (stored[0], padded):
    labels = jax.image.resize(labels.astype(jnp.float32), (labels.shape[0], stored[0], padded), method="nearest")
  return labels[:, :, left:left + stored[1]].astype(jnp.int32)


class PoseTransferModel:
  """A restored model of one family: ``generate`` in the stored frame (module docstring).

  Subclasses set :attr:`family` and implement ``_prepare_pair`` (host framing of one pair),
  ``_forward`` (the pure model-frame generation), ``_abstract_variables`` and
  :meth:`image_rows`.

  Args:
    config: the family's config (``<config name or file>[:preset]`` with the run's overrides).
    variables: ``{network: {'params': …, 'batch_stats': …?}}`` (NumPy or jax arrays).
    source: where the variables came from (``{'workdir', 'steps', …}``), kept in :attr:`source`
      and written by :func:`export`.
    mesh: device mesh (default :func:`hpt_jax.parallel.make_mesh` over all devices).
    batch_size: pairs per jitted call (default ``config.batch_size``), rounded up to a multiple of
      the device count; shorter batches are padded, so one shape is compiled.
  """

  family: str = ""
  #: Networks whose variables are kept (the generating ones).
  networks: tuple[str, ...] = ()

  def __init__(self, config, variables: dict, *, source: dict | None = None, mesh=None,
               batch_size: int | None = None):
    self.config = config
    self.stored_size = _stored_size(config)
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    n_dev = self.mesh.devices.size
    self.batch_size = -(-int(batch_size or config.batch_size) // n_dev) * n_dev
    self.dtype = jnp.dtype(config.dtype)
    self.source = dict(source or {})
    self.variables = jax.device_put(variables, parallel.replicated(self.mesh))
    self._generate_fn = jax.jit(self._stored_outputs)
    self._forward_fn = jax.jit(self._forward)

  # ----------------------------------------------------------------- family hooks
  pad_to_width: int = 0

  @property
  def model_size(self) -> tuple[int, int]:
    """(H, W) the networks see."""
    return tuple(int(s) for s in self.config.data.image_size)

  def image_rows(self) -> list[tuple[str, str]]:
    """``[(output key, label)]`` of the image outputs, the final one first (evaluation rows)."""
    raise NotImplementedError

  def description(self) -> str:
    """One line: which networks and checkpoints produce ``image``."""
    return f"{self.family} {self.source}"

  def _prepare_pair(self, source: Image.Image, source_kp: np.ndarray, target_kp: np.ndarray) -> dict:
    raise NotImplementedError

  def _forward(self, variables, batch) -> dict[str, jax.Array]:
    """Pure: model-frame batch → ``{output key: model-frame array}`` (``image`` included)."""
    raise NotImplementedError

  # ------------------------------------------------------------------- generic
  def _stored_outputs(self, variables, batch) -> dict[str, jax.Array]:
    out = self._forward(variables, batch)
    result = {}
    for key, value in out.items():
      if key == "flow":
        result[key] = _to_stored_flow(value, self.stored_size, self.pad_to_width)
      elif key == "visibility":
        result[key] = _to_stored_labels(value, self.stored_size, self.pad_to_width)
      else:
        result[key] = _to_stored_image(value, self.stored_size, self.pad_to_width)
    return result

  #: Whether the model takes face landmarks (DRN with its face module): :meth:`prepare` passes
  #: ``source_landmarks``/``target_landmarks`` to ``_prepare_pair`` only then.
  uses_faces: bool = False

  def prepare(self, source_images, source_keypoints, target_keypoints, source_landmarks=None,
              target_landmarks=None) -> dict[str, np.ndarray]:
    """Host framing of a batch: stored-frame inputs (validated) → the model-frame batch ``_forward`` takes.

    Args: as :meth:`generate`, batched.

    Returns:
      dict of NumPy arrays with a leading batch axis (family-specific keys, e.g. DRN
      ``source_image``, ``source_pose``, ``target_pose``).
    """
    images, src_kp, tgt_kp = self._validate(source_images, source_keypoints, target_keypoints)
    if not self.uses_faces:
      pairs = [self._prepare_pair(Image.fromarray(images[i]), src_kp[i], tgt_kp[i]) for i in range(len(images))]
    else:
      src_lm = _validate_landmarks("source_landmarks", source_landmarks, len(images))
      tgt_lm = _validate_landmarks("target_landmarks", target_landmarks, len(images))
      pairs = [self._prepare_pair(Image.fromarray(images[i]), src_kp[i], tgt_kp[i], src_lm[i], tgt_lm[i])
               for i in range(len(images))]
    return {k: np.stack([p[k] for p in pairs]) for k in pairs[0]}

  def _validate(self, images, src_kp, tgt_kp):
    images = np.asarray(images)
    h, w = self.stored_size
    if images.ndim != 4 or images.shape[1:] != (h, w, 3):
      raise InputError(f"source image of shape {images.shape[1:] if images.ndim == 4 else images.shape}: "
                       f"expected [{h}, {w}, 3] (config.data.stored_size = {h}x{w}; RGB)")
    if images.dtype == np.uint8:
      pass
    elif np.issubdtype(images.dtype, np.floating):
      if not np.all(np.isfinite(images)) or images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
        raise InputError("a float source image must be finite and in [-1, 1] (or pass uint8 in [0, 255])")
      images = image_io.to_uint8(images)
    else:
      raise InputError(f"source image dtype {images.dtype}: expected uint8 in [0, 255] or float in [-1, 1]")
    kps = []
    for name, kp in (("source_keypoints", src_kp), ("target_keypoints", tgt_kp)):
      kp = np.asarray(kp, np.float32)
      if kp.ndim == 2:
        kp = kp[None]
      if kp.shape != (len(images), 18, 2):
        raise InputError(f"{name} of shape {kp.shape}: expected [{len(images)}, 18, 2] "
                         f"(OpenPose-18 (y, x) pixels, -1 = missing) for {len(images)} source images")
      if not np.all(np.isfinite(kp)):
        raise InputError(f"{name} contains NaN or Inf")
      kps.append(kp)
    return images, kps[0], kps[1]

  def generate(self, source_image, source_keypoints, target_keypoints, source_landmarks=None,
               target_landmarks=None) -> dict[str, np.ndarray]:
    """The generated image and the family's intermediates, at the stored size.

    Args:
      source_image: ``[H, W, 3]`` or ``[B, H, W, 3]``, uint8 in [0, 255] or float in [-1, 1],
        H×W = ``config.data.stored_size``.
      source_keypoints, target_keypoints: float ``[18, 2]`` or ``[B, 18, 2]`` (y, x) pixels of
        the stored frame, OpenPose-18 order, −1 = missing.
      source_landmarks, target_landmarks: DRN with a face module only (ignored otherwise): the 68
        dlib landmarks of a *frontal* face in the source image and in the target image, float
        ``[68, 2]`` or ``[B, 68, 2]`` (y, x) stored-frame pixels, all −1 (or None) where there is
        none (:meth:`hpt_jax.input_pipeline.faces.FaceCache.frontal_landmarks`). The face
        module runs for the pairs with both.

    Returns:
      ``{'image': uint8 [B, H, W, 3], <intermediate>: …}`` (module docstring); without the batch
      axis when the inputs had none.

    Raises:
      InputError: wrong shape, size, dtype or non-finite values (names the argument).
    """
    single = np.ndim(source_image) == 3
    if single:
      source_image = np.asarray(source_image)[None]
      source_landmarks, target_landmarks = (None if lm is None else np.asarray(lm)[None]
                                            for lm in (source_landmarks, target_landmarks))
    batch = self.prepare(source_image, source_keypoints, target_keypoints, source_landmarks, target_landmarks)
    out = self.generate_batch(batch)
    return {k: v[0] for k, v in out.items()} if single else out

  def generate_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:meth:`generate` from an already framed batch (:meth:`prepare`), in chunks of ``batch_size``."""
    n = len(next(iter(batch.values())))
    chunks = []
    sharding = parallel.batch_sharding(self.mesh)
    for start in range(0, n, self.batch_size):
      part = {k: parallel.pad_to(v[start:start + self.batch_size], self.batch_size) for k, v in batch.items()}
      part = {k: jax.device_put(v, sharding) for k, v in part.items()}
      out = jax.device_get(self._generate_fn(self.variables, part))
      chunks.append({k: np.asarray(v)[:min(self.batch_size, n - start)] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

  def generate_device(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Jitted stored-frame outputs of a full, already sharded model-frame batch (device arrays;
    for the evaluation loop, which keeps them on the device)."""
    return self._generate_fn(self.variables, batch)

  def forward(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
    """Jitted model-frame outputs (no framing) of a model-frame batch — what the trainer's own
    ``generate`` computes; DIAF's flow EPE is scored on these."""
    return self._forward_fn(self.variables, batch)

  # ------------------------------------------------------------------- restore
  @classmethod
  def abstract_variables(cls, config) -> dict:
    """``{network: {'params', 'batch_stats'?}}`` shape tree of every network the family can use."""
    raise NotImplementedError

  @classmethod
  def restore(cls, config, workdir: str, *, step: int | None = None, level: int | None = None,
              mesh=None, batch_size: int | None = None) -> "PoseTransferModel":
    raise NotImplementedError


def _restore_network(directory: str, step: int, target: dict, workdir: str, rename: str | None = None,
                     mesh=None) -> dict:
  """Partial restore of ``{'params': {net: …}, 'batch_stats': {net: …}}`` from one stage folder."""
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), target)
  try:
    return checkpoints.restore_partial(os.path.join(directory, str(step), "state"), target)
  except checkpoints.CheckpointMismatchError as e:
    raise ConfigMismatchError(_mismatch_message(directory, workdir, str(e))) from e


def _validate_landmarks(name: str, landmarks, n: int) -> list:
  """[n] of float32 [68, 2] or None (None / any −1 = no frontal face)."""
  if landmarks is None:
    return [None] * n
  lm = np.asarray(landmarks, np.float32)
  if lm.shape != (n, 68, 2) or not np.all(np.isfinite(lm)):
    raise InputError(f"{name} of shape {lm.shape}: expected finite [{n}, 68, 2] (dlib 68-point (y, x) pixels "
                     "of the stored frame, -1 = no frontal face)")
  return [None if np.any(x < 0) else x for x in lm]


def _pick_step(directory: str, step: int | None, workdir: str) -> int:
  steps = checkpoints.checkpoint_steps(directory)
  if not steps:
    what = "no checkpoint folder" if not os.path.isdir(directory) else "no checkpoint in"
    raise CheckpointNotFoundError(
        f"{what} {directory}: train first (python launch/train.py --config=... --workdir={workdir}) "
        "or pass the --workdir of a trained run")
  if step is not None and step not in steps:
    raise CheckpointNotFoundError(f"no checkpoint at step {step} in {directory}; steps present: "
                                  f"{', '.join(map(str, steps))}")
  return steps[-1] if step is None else step


def _check_config(config, workdir: str, directory: str) -> None:
  differences = runs.config_differences(config, workdir)
  if differences:
    raise ConfigMismatchError(_mismatch_message(directory, workdir, "; ".join(differences)))


def _pose_maps(config, keypoints: np.ndarray, h: int, w: int) -> np.ndarray:
  """PATN heatmaps [..., h, w, 18] of ``config.pose``: σ = ``pose.sigma`` Gaussians, or PATN's
  one-pixel maps with ``pose.encoding='one_pixel'`` (:func:`hpt_jax.pose.keypoints_to_heatmaps`)."""
  return pose.keypoints_to_heatmaps(keypoints, h, w, float(config.pose.sigma),
                                    config.pose.get("encoding", "gaussian"))


# =================================================================================== DRN
class DRNModel(PoseTransferModel):
  """DRN / RATE-Net inference (DRN paper §IV-A): G_P's coarse output, the refined Ĩ_c + R_t and,
  with the face module, Eq. 2.

  Outputs: ``image`` (refined, clipped to [-1, 1] before quantising) and ``coarse`` (G_P alone).
  Model frame: ``data.image_size``, PATN Gaussian heatmaps of σ = ``pose.sigma``
  (:func:`hpt_jax.pose.keypoints_to_heatmaps`).

  **Face module** (:mod:`hpt_jax.models.drn_face`, trained separately with
  ``--config=deepfashion_drn_face``; restored with ``face_workdir``): for a *face pair* (frontal
  landmarks given for both the source and the target, :meth:`PoseTransferModel.generate`) the
  source face crop and the target sketch H_F give the face Ĩ_F, which is blended into the body
  output at the **stored** resolution (after the body's resize) with M_F = g(σ) * 1[B_F], σ =
  the face config's ``blend.sigma`` stored pixels (:func:`hpt_jax.models.drn_face.blend`). Then
  ``image`` is the blend, ``body`` the body output Ĩ_c + R_t (== ``image`` for other pairs) and
  ``face_used`` bool [B] says which outputs used the face module.
  """

  family = "drn"
  networks = ("pose_branch", "detail")
  face_config = None

  def __init__(self, config, variables, *, face_config=None, **kw):
    from hpt_jax.models import drn
    self.models = drn.build_models(config.model, jnp.dtype(config.dtype))
    if "face_generator" in variables:
      from hpt_jax.models import drn_face
      if face_config is None:
        raise ValueError("the face module's variables need its config (face_config)")
      self.face_config = face_config
      self.face_models = drn_face.build_models(face_config.model, jnp.dtype(config.dtype))
      self.networks = type(self).networks + ("face_generator",)
      self.uses_faces = True
    super().__init__(config, variables, **kw)

  def image_rows(self):
    rows = [("image", "model (refined)"), ("coarse", "coarse (G_P only)")]
    if self.face_config is not None:
      rows = [("image", "model (refined + face module)"), ("body", "refined (no face module)"), rows[1]]
    return rows

  def description(self):
    what = f"DRN refined output, checkpoint step {self.source.get('steps', {}).get('drn', '?')}"
    if self.face_config is not None:
      what += (f", face module step {self.source.get('steps', {}).get('drn_face', '?')} "
               f"({self.source.get('face_workdir', '?')})")
    return what

  def _prepare_pair(self, source, source_kp, target_kp, source_landmarks=None, target_landmarks=None):
    h, w = self.model_size
    image, src_kp = pipeline.frame_image(source, source_kp, 0, self.model_size)
    tgt_kp = pipeline.frame_keypoints(target_kp, self.stored_size, 0, self.model_size)
    heat = _pose_maps(self.config, np.stack([src_kp, tgt_kp]), h, w)
    out = {"source_image": image, "source_pose": heat[0], "target_pose": heat[1]}
    if self.face_config is not None:
      from hpt_jax.input_pipeline import faces
      out.update(faces.pair_arrays(source, source_landmarks, target_landmarks,
                                   float(self.face_config.face_data.box_scale)))
    return out

  def _forward(self, variables, batch):
    from hpt_jax.models import drn
    out = drn.generate(self.models, {k: v["params"] for k, v in variables.items() if k in type(self).networks}, batch)
    result = {"image": out["refined"], "coarse": out["coarse"]}
    if self.face_config is not None:
      from hpt_jax.models import drn_face
      result["face"] = drn_face.generate(self.face_models, {"face_generator": variables["face_generator"]["params"]},
                                         batch)
    return result

  def _stored_outputs(self, variables, batch):
    if self.face_config is None:
      return super()._stored_outputs(variables, batch)
    from hpt_jax.models import drn_face
    out = self._forward(variables, batch)
    h, w = self.stored_size
    body = jnp.clip(out["image"].astype(jnp.float32), -1.0, 1.0)
    if tuple(body.shape[1:3]) != (h, w):
      body = jax.image.resize(body, (body.shape[0], h, w, 3), method="linear")
    blended, _ = drn_face.blend(body, out["face"], batch["target_box"], batch["face_pair"],
                                float(self.face_config.blend.sigma))
    return {"image": image_io.quantize(jnp.clip(blended, -1.0, 1.0)).astype(jnp.uint8),
            "body": image_io.quantize(body).astype(jnp.uint8),
            "coarse": _to_stored_image(out["coarse"], self.stored_size, 0),
            "face_used": batch["face_pair"]}

  @classmethod
  def abstract_variables(cls, config):
    from hpt_jax.models import drn
    models = drn.build_models(config.model, jnp.dtype(config.dtype))
    size = tuple(config.data.image_size)
    return {name: {"params": jax.eval_shape(
        lambda *a, m=models[name]: m.init(jax.random.PRNGKey(0), *a)["params"],
        *drn.init_inputs(config.model, name, size))} for name in cls.networks}

  @classmethod
  def restore(cls, config, workdir, *, step=None, level=None, mesh=None, batch_size=None, face_workdir=None):
    """Restores G_P and G_T from ``<workdir>/checkpoints/drn/`` and, with ``face_workdir`` (a
    ``deepfashion_drn_face`` run), the face module's G_F (:func:`restore_face_module`)."""
    del level
    mesh = parallel.make_mesh() if mesh is None else mesh
    directory = os.path.abspath(os.path.join(workdir, "checkpoints", "drn"))
    step = _pick_step(directory, step, workdir)
    _check_config(config, workdir, directory)
    abstract = cls.abstract_variables(config)
    target = {"params": {k: v["params"] for k, v in abstract.items()}}
    restored = _restore_network(directory, step, target, workdir, mesh=mesh)
    variables = {k: {"params": restored["params"][k]} for k in cls.networks}
    source = {"workdir": os.path.abspath(workdir), "steps": {"drn": step}, "checkpoint": directory}
    face_config = None
    if face_workdir:
      face_config, face_variables, face_step = restore_face_module(face_workdir, mesh=mesh)
      variables["face_generator"] = face_variables
      source["steps"]["drn_face"] = face_step
      source["face_workdir"] = os.path.abspath(face_workdir)
    return cls(config, variables, source=source, mesh=mesh, batch_size=batch_size, face_config=face_config)


def restore_face_module(face_workdir: str, *, step: int | None = None, mesh=None):
  """DRN's face module from a ``deepfashion_drn_face`` run: ``(face config, {'params': G_F},
  step)``; the config is the run's ``config.json``, the weights ``checkpoints/drn_face/<step>``.

  Raises:
    CheckpointNotFoundError: no config.json or no checkpoint (names the folder).
    ConfigError: the run is not a face-module run.
    ConfigMismatchError: the checkpoint does not fit the recorded config.
  """
  from hpt_jax.models import drn_face
  face_config = runs.load_config_json(face_workdir)
  if face_config is None:
    raise CheckpointNotFoundError(f"no config.json in {face_workdir}: --face_workdir must be a face-module run "
                                  f"(python launch/train.py --config=deepfashion_drn_face:cpu --workdir={face_workdir})")
  if face_config.get("model_name") != "drn_face":
    raise ConfigError(f"{face_workdir} is a {face_config.get('model_name')!r} run, not the face module "
                      "(config.model_name='drn_face', --config=deepfashion_drn_face)")
  directory = os.path.abspath(os.path.join(face_workdir, "checkpoints", "drn_face"))
  step = _pick_step(directory, step, face_workdir)
  gen = drn_face.build_models(face_config.model)["face_generator"]
  size = int(face_config.face_data.crop_size)
  abstract = jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), *drn_face.init_inputs("face_generator", size)))
  restored = _restore_network(directory, step, {"params": {"face_generator": abstract["params"]}}, face_workdir,
                              mesh=parallel.make_mesh() if mesh is None else mesh)
  return face_config, {"params": restored["params"]["face_generator"]}, step


class DRNFaceModule(PoseTransferModel):
  """The ``drn_face`` family's entry: the face module is not a pose-transfer model by itself; it
  is restored into a DRN model (:meth:`DRNModel.restore` ``face_workdir``)."""

  family = "drn_face"
  networks = ("face_generator",)

  @classmethod
  def restore(cls, config, workdir, *, step=None, level=None, mesh=None, batch_size=None):
    del config, step, level, mesh, batch_size
    raise ConfigError(f"{workdir} holds DRN's face module, which works inside a DRN model: evaluate or transfer "
                      f"with the DRN run's --workdir and --face_workdir={workdir}")


# =================================================================================== PATN
class PATNModel(DRNModel):
  """PATN inference (Zhu et al., CVPR 2019): the pose-transfer generator alone, typically the
  authors' released weights imported by ``launch/import_checkpoint.py --family=patn``.

  Output: ``image`` (the generator's output). Model frame and heatmaps as :class:`DRNModel`
  (``pose.encoding='one_pixel'`` for PATN's DeepFashion weights). Variables: ``{'pose_branch':
  {'params', 'batch_stats'?}}`` (batch statistics with ``model.norm='batch'``, Market-1501). The
  family has no trainer: fine-tune the weights as DRN's pose branch (``init.pose_branch_checkpoint``).
  """

  family = "patn"
  networks = ("pose_branch",)

  def __init__(self, config, variables, **kw):
    from hpt_jax.models import patn
    self.model = patn.build_model(config.model, jnp.dtype(config.dtype))
    PoseTransferModel.__init__(self, config, variables, **kw)

  def image_rows(self):
    return [("image", "model (PATN generator)")]

  def description(self):
    origin = self.source.get("torch_checkpoint") or self.source.get("exported") or "?"
    return f"PATN generator from {origin}"

  def _forward(self, variables, batch):
    from hpt_jax.models import patn
    return patn.generate(self.model, variables["pose_branch"], batch)

  @classmethod
  def abstract_variables(cls, config):
    from hpt_jax.models import patn
    return {"pose_branch": patn.abstract_variables(config.model, tuple(config.data.image_size))}

  @classmethod
  def restore(cls, config, workdir, *, step=None, level=None, mesh=None, batch_size=None):
    del config, step, level, mesh, batch_size
    raise CheckpointNotFoundError(
        f"{workdir} has no inference.json: the patn family has no training checkpoints; import the authors' "
        "weights first (python launch/import_checkpoint.py --family=patn --torch_checkpoint=FILE "
        f"--config=deepfashion_patn --workdir={workdir})")


# =================================================================================== HPN
class HPNModel(PoseTransferModel):
  """HPN inference (HPN paper §3): the generator of the final restored level, plus earlier levels.

  Outputs: ``image`` (the highest restored level, resized to the stored size) and
  ``level_<H>x<W>`` for each earlier restored level (upsampled bilinearly to the stored size).
  Each level frames the source image to its own size; the target pose enters as Gaussian maps on
  the bottleneck grid (:func:`hpt_jax.models.hpn.generate`). Variables: ``{level_<H>x<W>:
  {'params', 'batch_stats'}}`` of the generator.
  """

  family = "hpn"

  def __init__(self, config, variables, **kw):
    from hpt_jax.models import hpn
    levels = (hpn.level(config, i) for i in range(int(config.model.num_levels)))
    self.levels = [lv for lv in levels if lv.name in variables]          # ascending index
    if not self.levels:
      raise ValueError(f"HPN variables name no level of this config: {sorted(variables)}")
    self.generators = {lv.name: hpn.build_generator(config, lv, jnp.dtype(config.dtype)) for lv in self.levels}
    self.networks = tuple(lv.name for lv in self.levels)
    super().__init__(config, variables, **kw)

  @property
  def level(self):
    """The :class:`hpt_jax.models.hpn.Level` whose output is ``image``."""
    return self.levels[-1]

  @property
  def model_size(self):
    return self.level.image_size

  def image_rows(self):
    rows = [("image", f"model ({self.level.name})")]
    rows += [(lv.name, f"{lv.name} (upsampled)") for lv in reversed(self.levels[:-1])]
    return rows

  def description(self):
    return f"HPN {self.level.name} generator, steps {self.source.get('steps', {})}"

  def _prepare_pair(self, source, source_kp, target_kp):
    out = {}
    for lv in self.levels:
      image, _ = pipeline.frame_image(source, source_kp, 0, lv.image_size)
      out[f"source_image/{lv.name}"] = image
      out[f"target_keypoints/{lv.name}"] = pipeline.frame_keypoints(target_kp, self.stored_size, 0, lv.image_size)
    return out

  def _forward(self, variables, batch):
    from hpt_jax.models import hpn
    out = {}
    for lv in self.levels:
      level_batch = {"source_image": batch[f"source_image/{lv.name}"],
                     "target_keypoints": batch[f"target_keypoints/{lv.name}"]}
      key = "image" if lv is self.level else lv.name
      out[key] = hpn.generate(self.generators[lv.name], lv, variables[lv.name], level_batch)
    return out

  @classmethod
  def abstract_variables(cls, config):
    from hpt_jax.models import hpn
    out = {}
    for i in range(int(config.model.num_levels)):
      lv = hpn.level(config, i)
      gen = hpn.build_generator(config, lv, jnp.dtype(config.dtype))
      hb, wb = lv.bottleneck_size
      out[lv.name] = jax.eval_shape(lambda g=gen, lv=lv: g.init(
          jax.random.PRNGKey(0), jnp.zeros((1, *lv.image_size, 3)), jnp.zeros((1, hb, wb, 18)), False))
    return out

  @classmethod
  def restore(cls, config, workdir, *, step=None, level=None, mesh=None, batch_size=None):
    """Restores every level with a checkpoint up to ``level`` (default: the highest one present).

    ``step`` applies to the chosen level (earlier levels: their latest checkpoint). ``level`` is
    an index (negative from the end) of the config's levels.
    """
    from hpt_jax.models import hpn
    mesh = parallel.make_mesh() if mesh is None else mesh
    n = int(config.model.num_levels)
    present = [i for i in range(n) if checkpoints.checkpoint_steps(
        os.path.join(workdir, "checkpoints", hpn.level(config, i).name))]
    if level is None:
      if not present:
        _pick_step(os.path.abspath(os.path.join(workdir, "checkpoints", hpn.level(config, n - 1).name)),
                   None, workdir)
      top = present[-1]
      if top != n - 1:
        logging.warning("HPN run %s has checkpoints up to %s only (the config's final level is %s)", workdir,
                        hpn.level(config, top).name, hpn.level(config, n - 1).name)
    else:
      top = hpn.level(config, level).index
    abstract = cls.abstract_variables(config)
    variables, steps = {}, {}
    for i in [i for i in present if i < top] + [top]:
      lv = hpn.level(config, i)
      directory = os.path.abspath(os.path.join(workdir, "checkpoints", lv.name))
      s = _pick_step(directory, step if i == top else None, workdir)
      if i == top:
        _check_config(config, workdir, directory)
      target = {"params": {"generator": abstract[lv.name]["params"]},
                "batch_stats": {"generator": abstract[lv.name]["batch_stats"]}}
      restored = _restore_network(directory, s, target, workdir, mesh=mesh)
      variables[lv.name] = {"params": restored["params"]["generator"],
                            "batch_stats": restored["batch_stats"]["generator"]}
      steps[lv.name] = s
    return cls(config, variables, source={"workdir": os.path.abspath(workdir), "steps": steps}, mesh=mesh,
               batch_size=batch_size)


# =================================================================================== DIAF
class DIAFModel(PoseTransferModel):
  """DIAF inference (DIAF paper §3.2–3.5): flow + visibility, flow-guided generator, pixel warping.

  Outputs: ``image`` — the pixel-warped x̂2 when the pixel-warp net is present, else the
  generator's x̃2, else (flow only) the flow-warped source x_w; ``flow`` (stored pixels, target →
  source, zero on background), ``visibility``, ``warped_source`` (x_w) and, with pixel warping,
  ``before_pixel_warp`` (x̃2). Model frame: ``data.image_size`` after the white padding to
  ``data.pad_to_width``, binary disk poses of radius ``pose.disk_radius``.
  """

  family = "diaf"
  PHASES = ("flow", "generator", "pixel_warp")

  def __init__(self, config, variables, **kw):
    from hpt_jax.models import diaf
    if "flow" not in variables:
      raise ValueError("DIAF needs the flow module's variables ('flow')")
    if "pixel_warp" in variables and "generator" not in variables:
      raise ValueError("DIAF's pixel-warp net needs the generator's variables too")
    self.models = diaf.build_models(config, jnp.dtype(config.dtype))
    self.networks = tuple(p for p in self.PHASES if p in variables)
    self.pad_to_width = int(config.data.pad_to_width)
    super().__init__(config, variables, **kw)

  def image_rows(self):
    last = self.networks[-1]
    label = {"flow": "model (flow-warped source; flow phase only)", "generator": "model (generator; no pixel warping)",
             "pixel_warp": "model (pixel-warped)"}[last]
    rows = [("image", label)]
    if last == "pixel_warp":
      rows.append(("before_pixel_warp", "before pixel warping"))
    if last != "flow":
      rows.append(("warped_source", "flow-warped source"))
    return rows

  def description(self):
    what = {"flow": "the flow-warped source (only the flow phase has a checkpoint)",
            "generator": "the generator's output (no pixel-warp checkpoint yet)",
            "pixel_warp": "the pixel-warped output"}[self.networks[-1]]
    return f"DIAF {what}; phase steps {self.source.get('steps', {})}"

  def _prepare_pair(self, source, source_kp, target_kp):
    from hpt_jax import flow as flow_lib
    h, w = self.model_size
    image, src_kp = pipeline.frame_image(source, source_kp, self.pad_to_width, self.model_size)
    tgt_kp = pipeline.frame_keypoints(target_kp, self.stored_size, self.pad_to_width, self.model_size)
    disks = flow_lib.keypoints_to_disks(np.stack([src_kp, tgt_kp]), h, w, float(self.config.pose.disk_radius))
    return {"source_image": image, "source_pose": disks[0], "target_pose": disks[1]}

  def _forward(self, variables, batch):
    from hpt_jax.models import diaf
    out = diaf.generate(self.models, variables, batch)
    result = {"flow": out["flow"], "visibility": out["vis"], "warped_source": out["warped"]}
    if "final" in out:
      result.update(image=out["final"], before_pixel_warp=out["generated"])
    elif "generated" in out:
      result["image"] = out["generated"]
    else:
      result["image"] = out["warped"]
    return result

  def predict_flow(self, batch) -> dict[str, jax.Array]:
    """The flow module alone (jitted, model frame): :func:`hpt_jax.models.diaf.predict_flow` on
    ``source_pose``/``target_pose`` → ``{'flow', 'vis', 'raw_flow'}`` (what DIAF's flow EPE scores;
    the generator and pixel-warp nets are not run)."""
    return self._flow_fn(self.variables["flow"], batch["source_pose"], batch["target_pose"])

  @functools.cached_property
  def _flow_fn(self):
    from hpt_jax.models import diaf

    def fn(flow_variables, source_pose, target_pose):
      flow, vis, raw = diaf.predict_flow(self.models["flow"], flow_variables, source_pose, target_pose)
      return {"flow": flow, "vis": vis, "raw_flow": raw}

    return jax.jit(fn)

  @classmethod
  def abstract_variables(cls, config):
    from hpt_jax.models import diaf
    models = diaf.build_models(config, jnp.dtype(config.dtype))
    size = tuple(config.data.image_size)
    return {p: diaf.abstract_variables(models, p, size) for p in cls.PHASES}

  @classmethod
  def restore(cls, config, workdir, *, step=None, level=None, mesh=None, batch_size=None):
    """Restores every phase with a checkpoint (the flow phase is required); ``step`` applies to
    the last phase present, the others give their latest checkpoint."""
    del level
    mesh = parallel.make_mesh() if mesh is None else mesh
    dirs = {p: os.path.abspath(os.path.join(workdir, "checkpoints", p)) for p in cls.PHASES}
    present = [p for p in cls.PHASES if checkpoints.checkpoint_steps(dirs[p])]
    if "flow" not in present:
      _pick_step(dirs["flow"], None, workdir)          # raises, naming the folder
    present = present[:next((i for i, p in enumerate(cls.PHASES) if p not in present), len(cls.PHASES))]
    _check_config(config, workdir, dirs[present[-1]])
    abstract = cls.abstract_variables(config)
    variables, steps = {}, {}
    for p in present:
      s = _pick_step(dirs[p], step if p == present[-1] else None, workdir)
      target = {"params": {p: abstract[p]["params"]}, "batch_stats": {p: abstract[p]["batch_stats"]}}
      restored = _restore_network(dirs[p], s, target, workdir, mesh=mesh)
      variables[p] = {"params": restored["params"][p], "batch_stats": restored["batch_stats"][p]}
      steps[p] = s
    return cls(config, variables, source={"workdir": os.path.abspath(workdir), "steps": steps}, mesh=mesh,
               batch_size=batch_size)


# =============================================================================== entry points
def load(config, workdir: str, *, step: int | None = None, level: int | None = None, mesh=None,
         batch_size: int | None = None, face_workdir: str | None = None) -> PoseTransferModel:
  """Restores the model of ``config.model_name`` from a training workdir or an exported folder.

  Args:
    config: the run's config (``<config name or file>[:preset]`` and the run's overrides); ignored
      for an exported folder, which carries its own; None = the run's ``<workdir>/config.json``.
    workdir: a training run folder (``checkpoints/...``) or an :func:`export` folder (has
      ``inference.json``).
    step: checkpoint step of the final network (default: the latest).
    level: HPN only, the level index whose output is ``image`` (default: the highest present).
    mesh, batch_size: see :class:`PoseTransferModel`.
    face_workdir: DRN only: a ``deepfashion_drn_face`` run whose face module is blended in
      (:class:`DRNModel`; not for an exported folder).

  Raises:
    hpt_jax.registry.UnknownFamilyError: unknown ``config.model_name``.
    CheckpointNotFoundError: no checkpoint folder / no checkpoint / not that step (names the folder).
    ConfigMismatchError: the run's config.json or the checkpoint's shapes differ from the config's
      model (lists the differences).
  """
  if os.path.isfile(os.path.join(workdir, "inference.json")):
    if face_workdir:
      raise ConfigError(f"face_workdir={face_workdir!r}: not supported with an exported model ({workdir})")
    return load_exported(workdir, mesh=mesh, batch_size=batch_size)
  if config is None:
    config = runs.load_config_json(workdir)
    if config is None:
      raise CheckpointNotFoundError(f"no inference.json or config.json in {workdir}: pass the config the run "
                                    "was trained with")
  cls = registry.get(config.model_name).inference_class()
  if face_workdir:
    if cls is not DRNModel:
      raise ConfigError(f"face_workdir={face_workdir!r}: the face module works with DRN models only "
                        f"(config.model_name={config.model_name!r})")
    return cls.restore(config, workdir, step=step, mesh=mesh, batch_size=batch_size, face_workdir=face_workdir)
  return cls.restore(config, workdir, step=step, level=level, mesh=mesh, batch_size=batch_size)


def export(model: PoseTransferModel, path: str, *, source: dict | None = None) -> str:
  """Writes ``model`` in the inference-only layout (module docstring); returns ``path``.

  Args:
    model: a restored (or imported) model.
    path: the folder to write; an existing ``inference.json``/``variables`` there is replaced.
    source: what to record as the weights' origin (default ``model.source``), e.g. the authors'
      release for an importer.
  """
  if getattr(model, "face_config", None) is not None:
    raise ConfigError("export of a DRN model with its face module is not supported: export the body model "
                      "(load it without face_workdir) and keep the face-module run folder")
  os.makedirs(path, exist_ok=True)
  checkpoints.save_tree(os.path.join(path, "variables"), jax.device_get(model.variables))
  record = {
      "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model_name": model.family,
      "networks": list(model.networks), "stored_size": list(model.stored_size),
      "source": source if source is not None else model.source,
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "config": json.loads(model.config.to_json_best_effort()),
  }
  tmp = os.path.join(path, "inference.json.tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(path, "inference.json"))
  return path


def load_exported(path: str, *, mesh=None, batch_size: int | None = None) -> PoseTransferModel:
  """Reads a folder written by :func:`export` (or a checkpoint importer).

  Raises:
    CheckpointNotFoundError: no ``inference.json`` / ``variables`` in ``path``.
    ValueError: an unknown format or version (names the file).
    ConfigMismatchError: the variables do not fit the recorded config's networks.
  """
  meta_path = os.path.join(path, "inference.json")
  if not os.path.isfile(meta_path):
    raise CheckpointNotFoundError(f"no inference.json in {path} (not an exported model)")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != EXPORT_FORMAT or meta.get("version") != EXPORT_VERSION:
    raise ValueError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                     f"expected {EXPORT_FORMAT!r} version {EXPORT_VERSION}")
  config = ml_collections.ConfigDict(meta["config"])
  cls = registry.get(meta["model_name"]).inference_class()
  abstract = cls.abstract_variables(config)
  unknown = [n for n in meta["networks"] if n not in abstract]
  if unknown:
    raise ConfigMismatchError(f"{meta_path}: networks {unknown} are not networks of {meta['model_name']} "
                              f"({sorted(abstract)})")
  mesh = parallel.make_mesh() if mesh is None else mesh
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                        {n: abstract[n] for n in meta["networks"]})
  try:
    variables = checkpoints.restore_partial(os.path.join(path, "variables"), target)
  except checkpoints.CheckpointMismatchError as e:
    raise ConfigMismatchError(str(e)) from e
  return cls(config, variables, source={**meta.get("source", {}), "exported": os.path.abspath(path)},
             mesh=mesh, batch_size=batch_size)


def stored_frame_pairs(examples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source images (uint8, stored frame) and keypoints of PATN pair examples
  (:class:`hpt_jax.input_pipeline.patn_format.PairExample`), for :meth:`PoseTransferModel.generate`."""
  images = np.stack([np.asarray(e.open("source")) for e in examples])
  return (images, np.stack([e.source_keypoints for e in examples]).astype(np.float32),
          np.stack([e.target_keypoints for e in examples]).astype(np.float32))

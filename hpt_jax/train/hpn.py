"""HPN training: progressive levels, global + local perceptual loss, local discriminators.

Source: HPN (Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training",
arXiv:2008.11898, 2020) §3 (Eqs. 2–4) and §3.4; no public code exists.

One *level* (an image size, :func:`hpt_jax.models.hpn.level_sizes`) is trained for
``steps_per_level`` steps, then the network grows (:func:`hpt_jax.models.hpn.grow_params`: new
outer encoder/decoder blocks and new from/to-RGB layers, everything else carried over and still
trained; a fresh optimiser state) and the next level starts. One step is one Adam update of the
generator on

    L = λ_g · L_global + λ_l · L_local                     (Eq. 4; λ_g = λ_l = 1 in the paper)
    L_global = Σ_l C(φ_l(X'), φ_l(X̂))                        (Eq. 2)
    L_local  = Σ_d Σ_l C(φ_l(X'_d), φ_l(X̂_d))                (Eq. 3; sum over the N regions)

with φ = ImageNet VGG-16 (``perceptual.taps``) and C = mean squared error over the activation's
elements for the first half of the level's steps and mean absolute error for the second half
(§3.1: "L2 loss in the first half of the training process within each resolution level and L1
loss in the second half"). Regions X'_d, X̂_d are the ``H/8``-sided squares around the target
pose's 18/31/44 local-descriptor points (:func:`hpt_jax.pose.local_descriptor_boxes`); crops
smaller than ``loss.local_min_size`` (32 px: VGG-16's relu4_3 then still has 4×4 positions) are
resized up to it, bilinearly, before φ. Regions of missing joints are masked out. Eq. 3 sums over
regions, so L_local counts each region like one global term; we follow the paper (not a mean).

At the config's final level, when ``loss.local_discriminator`` is on, a local discriminator
replaces the local perceptual loss (§3.2: "local discriminators in replacement of the local
perceptual loss at the highest resolution"): on each region, (X_d, X'_d) — reference-image crop
and target crop — is real and (X_d, X̂_d) is fake; non-saturating BCE on the averaged 2×2 logit
(the paper reads the output as a probability). The generator then gets
``λ_gan · BCE(D(X_d, X̂_d), real)``; λ_gan (``loss.local_gan``) is not given in the paper — we use
0.1. The discriminator is updated once per generator step with the same Adam settings (paper
silent).

Optimiser (§3.4): Adam, lr 2e-4, weight decay 5e-4 (PyTorch's coupled L2,
:func:`hpt_jax.train.optim.adam_l2`), β = (0.9, 0.999) (paper silent: Adam's defaults), constant
rate. Batch size: paper silent; 8 by default.

The step is a pure function of ``(state, batch, vgg_params)``; jitted with the state donated and
the batch sharded over the ``'data'`` mesh axis, BatchNorm's batch statistics are reduced over
the whole global batch by the compiler (tests/test_hpn.py checks 8 devices == 1 device).
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from hpt_jax import checkpoints, errors, image_io, parallel, runs
from hpt_jax.models import hpn
from hpt_jax.models.vgg import VGG
from hpt_jax.train import optim

MODEL_KEYS = ("source_image", "target_image", "target_keypoints", "target_boxes", "target_box_valid")


@flax.struct.dataclass
class HPNState:
  """One level's training state (saved whole by Orbax in ``checkpoints/level_<H>x<W>/``).

  Attributes:
    step: int32 scalar, steps completed *in this level*.
    params: ``{'generator': …}`` plus ``'local_disc'`` when the level uses local discriminators;
      float32.
    batch_stats: ``{'generator': BatchNorm running means/vars}``.
    opt_state: ``{network: optax state}``.
  """

  step: jax.Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: dict[str, Any]


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def criterion(a: jax.Array, b: jax.Array, use_l1: jax.Array, axes=None) -> jax.Array:
  """HPN's criterion C (§3.1): mean |a−b| if ``use_l1`` else mean (a−b)², over ``axes`` (default all)."""
  d = a.astype(jnp.float32) - b.astype(jnp.float32)
  return jnp.where(use_l1, jnp.mean(jnp.abs(d), axis=axes), jnp.mean(jnp.square(d), axis=axes))


def validate_config(config) -> tuple[tuple[int, int], ...]:
  """Checks the HPN-specific fields; returns the level sizes.

  Raises:
    ValueError: naming the field (``model.base_size``, ``model.num_levels``,
      ``local_descriptors``, ``steps_per_level``).
  """
  sizes = hpn.level_sizes(config.model.base_size, config.model.num_levels)
  if len(config.local_descriptors) != len(sizes):
    raise errors.ConfigError(f"config.local_descriptors={tuple(config.local_descriptors)} needs one entry "
                     f"per level ({len(sizes)} levels: {sizes})")
  for n in config.local_descriptors:
    if n not in (0, 18, 31, 44):
      raise errors.ConfigError(f"config.local_descriptors entries must be 0, 18, 31 or 44, got {n!r}")
  if config.steps_per_level < 1:
    raise errors.ConfigError(f"config.steps_per_level={config.steps_per_level} must be >= 1")
  return sizes


class HPNTrainer:
  """Networks, optimiser and pure step functions for one HPN level.

  Args:
    config: a ``hpt_jax/configs/deepfashion_hpn.py`` / ``hpt_jax/configs/hpn_1024.py`` config.
    level: level index in ``[0, model.num_levels)``.

  Raises:
    ValueError: bad level index or config fields (:func:`validate_config`).
  """

  def __init__(self, config, level: int):
    validate_config(config)
    self.config = config
    self.spec = hpn.level(config, level)
    self.level = level = self.spec.index
    self.image_size = self.spec.image_size
    self.bottleneck_size = self.spec.bottleneck_size
    self.num_local = int(config.local_descriptors[level])
    self.side = max(1, self.image_size[0] // 8)
    self.local_size = max(self.side, int(config.loss.local_min_size))
    self.steps = int(config.steps_per_level)
    last = level == config.model.num_levels - 1
    self.use_local_disc = bool(config.loss.local_discriminator) and last and self.num_local > 0
    self.use_local_perceptual = self.num_local > 0 and not self.use_local_disc
    dtype = jnp.dtype(config.dtype)
    self.generator = hpn.build_generator(config, self.spec, dtype)
    self.local_disc = hpn.LocalDiscriminator(config.model.ndf, dtype)
    self.vgg = VGG(arch=config.perceptual.network, taps=tuple(config.perceptual.taps), dtype=dtype)
    o = config.optimizer
    self.tx = optim.adam_l2(o.b1, o.b2, o.eps, o.weight_decay)
    self.lr = float(o.learning_rate)
    self.w = config.loss

  @property
  def name(self) -> str:
    """``level_<H>x<W>``, the checkpoint folder name."""
    return self.spec.name

  @property
  def sigma_cells(self) -> float:
    """Pose-map σ in bottleneck cells (:class:`hpt_jax.models.hpn.Level`)."""
    return self.spec.sigma_cells

  def init_state(self, rng: jax.Array) -> HPNState:
    """Fresh parameters (He init) and optimiser state for this level."""
    h, w = self.image_size
    hb, wb = self.bottleneck_size
    k_g, k_d = jax.random.split(rng)
    variables = self.generator.init(k_g, jnp.zeros((1, h, w, 3)), jnp.zeros((1, hb, wb, 18)), False)
    params = {"generator": variables["params"]}
    if self.use_local_disc:
      crop = jnp.zeros((1, self.side, self.side, 3))
      params["local_disc"] = self.local_disc.init(k_d, crop, crop)["params"]
    return HPNState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats={"generator": variables["batch_stats"]},
                    opt_state={k: self.tx.init(v) for k, v in params.items()})

  def grow_from(self, previous: HPNState, rng: jax.Array) -> tuple[HPNState, list[str], list[str]]:
    """This level's initial state from the previous level's final one (§3.3).

    Returns:
      ``(state, carried layer names, added layer names)``; step 0, fresh optimiser state.
    """
    fresh = self.init_state(rng)
    gen, carried, added = hpn.grow_params(previous.params["generator"], fresh.params["generator"])
    stats, _, _ = hpn.grow_params(previous.batch_stats["generator"], fresh.batch_stats["generator"])
    params = dict(fresh.params, generator=gen)
    state = fresh.replace(params=params, batch_stats={"generator": stats},
                          opt_state={k: self.tx.init(v) for k, v in params.items()})
    return state, carried, added

  # ---------------------------------------------------------------- forward
  def pose_maps(self, batch) -> jax.Array:
    """``[B, Hb, Wb, 18]`` target-pose maps on the bottleneck grid."""
    return hpn.pose_maps_on_grid(batch["target_keypoints"], self.image_size, self.bottleneck_size,
                                 self.spec.sigma_cells)

  def generate(self, params, batch_stats, batch) -> jax.Array:
    """:func:`hpt_jax.models.hpn.generate` with this level's generator and the state's variables."""
    return hpn.generate(self.generator, self.spec,
                        {"params": params["generator"], "batch_stats": batch_stats["generator"]}, batch)

  def _features(self, vgg_params, images):
    return self.vgg.apply({"params": vgg_params}, images)

  def _crops(self, images, batch, resize: bool = True) -> jax.Array:
    """``[B·N, s', s', 3]`` region crops; for the perceptual network (``resize``) resized up to
    ``local_size`` when smaller; the local discriminator sees them at their own size."""
    crops = hpn.crop_regions(images, batch["target_boxes"], self.side)
    b, n = crops.shape[:2]
    crops = crops.reshape(b * n, self.side, self.side, 3)
    if resize and self.local_size != self.side:
      crops = jax.image.resize(crops, (b * n, self.local_size, self.local_size, 3), "linear")
    return crops

  def _local_perceptual(self, pred_feats, target_feats, valid, use_l1) -> jax.Array:
    """Eq. 3 per image, averaged over the batch: Σ_d valid_d Σ_l C(φ_l(X'_d), φ_l(X̂_d))."""
    b, n = valid.shape
    per_region = sum(criterion(pred_feats[k], target_feats[k], use_l1, axes=(1, 2, 3))
                     for k in pred_feats)                              # [B·N]
    per_region = per_region.reshape(b, n) * valid.astype(jnp.float32)
    return jnp.mean(jnp.sum(per_region, axis=1))

  # ------------------------------------------------------------------- step
  def train_step(self, state: HPNState, batch: dict, vgg_params) -> tuple[HPNState, dict]:
    """One generator update (and one local-D update at a local-D level). Pure; jit with the state donated.

    Args:
      state: :class:`HPNState` of this level.
      batch: ``source_image``/``target_image`` float ``[B, H, W, 3]`` in [-1, 1],
        ``target_keypoints`` ``[B, 18, 2]`` (y, x) pixels, and — for levels with local
        descriptors — ``target_boxes`` int32 ``[B, N, 4]`` and ``target_box_valid`` bool
        ``[B, N]`` (``hpt_jax.input_pipeline.pipeline.create_pair_dataset(local_descriptors=N)``).
      vgg_params: frozen VGG parameters for ``perceptual.taps``.

    Returns:
      ``(new_state, metrics)``: float32 scalars — ``loss/global_perceptual``,
      ``loss/local_perceptual``, ``loss/local_gan``, ``loss/total``, ``disc/local``,
      ``criterion_is_l1`` (0 then 1 from the half-way step), ``l1`` (monitor only),
      ``grad_norm/*``, ``lr``.
    """
    w = self.w
    use_l1 = state.step >= self.steps // 2
    source, target = batch["source_image"], batch["target_image"]
    pose_maps = self.pose_maps(batch)
    target_feats = jax.lax.stop_gradient(self._features(vgg_params, target))
    local = self.num_local > 0
    if local:
      valid = batch["target_box_valid"]
    if self.use_local_perceptual:
      target_crop_feats = jax.lax.stop_gradient(self._features(vgg_params, self._crops(target, batch)))
    if self.use_local_disc:
      reference_crops = self._crops(source, batch, resize=False)
      target_crops = self._crops(target, batch, resize=False)
    params, opt_state = dict(state.params), dict(state.opt_state)
    zero = jnp.zeros((), jnp.float32)

    def generator_loss(g_params):
      generated, mutated = self.generator.apply(
          {"params": g_params, "batch_stats": state.batch_stats["generator"]}, source, pose_maps, True,
          mutable=["batch_stats"])
      feats = self._features(vgg_params, generated)
      global_per = sum(criterion(feats[k], target_feats[k], use_l1) for k in feats)
      local_per, local_gan = zero, zero
      if self.use_local_perceptual:
        local_per = self._local_perceptual(self._features(vgg_params, self._crops(generated, batch)),
                                           target_crop_feats, valid, use_l1)
      if self.use_local_disc:
        logits = self.local_disc.apply({"params": params["local_disc"]}, reference_crops,
                                       self._crops(generated, batch, resize=False))
        local_gan = _masked_mean(optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)),
                                 valid.reshape(-1))
      total = w.global_perceptual * global_per + w.local_perceptual * local_per + w.local_gan * local_gan
      aux = {"loss/global_perceptual": global_per, "loss/local_perceptual": local_per,
             "loss/local_gan": local_gan, "loss/total": total,
             "l1": jnp.mean(jnp.abs(generated - target))}
      return total, (aux, mutated["batch_stats"], generated)

    grads, (metrics, new_stats, generated) = jax.grad(generator_loss, has_aux=True)(params["generator"])
    metrics["grad_norm/generator"] = optim.global_norm(grads)
    updates, opt_state["generator"] = self.tx.update(grads, opt_state["generator"], params["generator"])
    params["generator"] = optim.apply_updates(params["generator"], updates, self.lr)
    metrics["disc/local"] = zero

    if self.use_local_disc:
      fake_crops = jax.lax.stop_gradient(self._crops(generated, batch, resize=False))

      def disc_loss(d_params):
        real = self.local_disc.apply({"params": d_params}, reference_crops, target_crops)
        fake = self.local_disc.apply({"params": d_params}, reference_crops, fake_crops)
        per = (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real))
               + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)))
        return _masked_mean(per, valid.reshape(-1))

      d_loss, d_grads = jax.value_and_grad(disc_loss)(params["local_disc"])
      metrics["disc/local"] = d_loss
      metrics["grad_norm/local_disc"] = optim.global_norm(d_grads)
      updates, opt_state["local_disc"] = self.tx.update(d_grads, opt_state["local_disc"], params["local_disc"])
      params["local_disc"] = optim.apply_updates(params["local_disc"], updates, self.lr)

    metrics["criterion_is_l1"] = use_l1.astype(jnp.float32)
    metrics["lr"] = jnp.float32(self.lr)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats={"generator": new_stats},
                              opt_state=opt_state)
    return new_state, metrics


# ------------------------------------------------------------------ evaluation
def level_eval_metrics(trainer: HPNTrainer, state: HPNState, eval_batches) -> dict[str, float]:
  """SSIM, MS-SSIM, local-SSIM (44 regions, HPN §4.2) and LPIPS-VGG of a level on the evaluation pairs.

  At the level's resolution, on 8-bit quantised images: SSIM = Gaussian σ 1.5, range 255
  (:func:`hpt_jax.metrics.ssim.ssim`, skimage semantics); local-SSIM = that SSIM map averaged in
  each of the 44 local-descriptor boxes of the target pose and over the boxes
  (:func:`hpt_jax.metrics.ssim.local_ssim`); MS-SSIM (range 255, 5 scales; only at levels of
  at least :func:`hpt_jax.metrics.ssim.ms_ssim_min_size` px per side, e.g. 256×176, not 64×44 or
  128×88); LPIPS v0.1 with VGG (skipped below 32 px high).

  Args:
    trainer, state: the level's trainer and state.
    eval_batches: host batches with ``source_image``, ``target_image``, ``target_keypoints``
      at the level size.

  Returns:
    ``{'eval/ssim', 'eval/local_ssim', 'eval/ms_ssim' and 'eval/lpips_vgg' (if computed), 'eval/pairs'}``.
  """
  from hpt_jax import pose
  from hpt_jax.metrics import lpips as lpips_lib
  from hpt_jax.metrics import ssim as ssim_lib
  gen = jax.jit(trainer.generate)
  q = lambda x: np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255)  # noqa: E731
  ssims, locals_, lpipss, ms_ssims = [], [], [], []
  ms_ok = min(trainer.image_size) >= ssim_lib.ms_ssim_min_size()
  for batch in eval_batches:
    model_batch = {k: batch[k] for k in ("source_image", "target_image", "target_keypoints")}
    out = np.asarray(gen(state.params, state.batch_stats, model_batch))
    pred_q, tgt_q = q(out), q(batch["target_image"])
    ssims.append(np.asarray(ssim_lib.ssim(pred_q, tgt_q, data_range=255.0)))
    boxes, _ = pose.local_descriptor_boxes(batch["target_keypoints"], 44, trainer.image_size)
    locals_.append(np.asarray(ssim_lib.local_ssim(pred_q, tgt_q, boxes, 255.0)))
    if ms_ok:
      ms_ssims.append(np.asarray(ssim_lib.ms_ssim(pred_q, tgt_q, 255.0)))
    if trainer.image_size[0] >= 32 and trainer.image_size[1] >= 32:
      lpipss.append(np.asarray(lpips_lib.lpips_distance(pred_q / 127.5 - 1.0, tgt_q / 127.5 - 1.0, "vgg")))
  result = {"eval/ssim": float(np.mean(np.concatenate(ssims))),
            "eval/local_ssim": float(np.nanmean(np.concatenate(locals_))),
            "eval/pairs": float(sum(len(s) for s in ssims))}
  if ms_ssims:
    result["eval/ms_ssim"] = float(np.mean(np.concatenate(ms_ssims)))
  if lpipss:
    result["eval/lpips_vgg"] = float(np.mean(np.concatenate(lpipss)))
  return result


# ---------------------------------------------------------------------- driver
def _level_dataset(config, examples, trainer: HPNTrainer, train: bool, batch_size: int):
  from hpt_jax.input_pipeline import pipeline
  return pipeline.create_pair_dataset(
      examples, image_size=trainer.image_size, sigma=config.pose.sigma, batch_size=batch_size,
      seed=config.seed + trainer.level, train=train, flip=config.data.flip and train,
      shard_index=jax.process_index() if train else 0,
      shard_count=jax.process_count() if train else 1, num_workers=config.data.num_workers if train else 0,
      drop_remainder=train, pose_maps=False, local_descriptors=trainer.num_local if train else 0)


def _model_inputs(batch: dict) -> dict:
  return {k: batch[k] for k in MODEL_KEYS if k in batch}


def train_and_evaluate(config, workdir: str) -> HPNState:
  """Trains every level of ``config`` in order, resuming where a previous run stopped.

  Workdir layout: ``checkpoints/level_<H>x<W>/<step>/`` (Orbax: the level's state + data-iterator
  state), TensorBoard events at the top (scalars prefixed ``level_<H>x<W>/``), samples
  ``samples/level_<H>x<W>_step_<N>.png``, per-level evaluation ``eval/level_<H>x<W>.json``,
  ``config.json``. A level whose latest checkpoint is at ``steps_per_level`` is complete and
  skipped; a partial level resumes from its latest checkpoint; a new level starts from the previous
  level's final weights (restored from its folder if this process did not train it).

  Returns:
    the final level's state (restored from its folder when every level was already complete).

  Raises:
    ValueError: bad config fields (names them).
    hpt_jax.input_pipeline.patn_format.DataError: bad data (names the file and row).
    hpt_jax.weights.WeightsNotFoundError: perceptual weights missing.
    hpt_jax.train.loop.NonFiniteLossError: a loss became NaN/Inf.
  """
  from hpt_jax.input_pipeline import pipeline
  from hpt_jax.train import loop

  sizes = validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  rep = parallel.replicated(mesh)
  local_batch = parallel.per_process_batch_size(config.batch_size, mesh)
  train_examples = pipeline.load_examples(config.data, logger=logging.info)
  eval_examples = pipeline.load_examples(config.eval_data, logger=logging.info)
  if config.eval_max_pairs:
    eval_examples = eval_examples[:config.eval_max_pairs]
  from hpt_jax import weights
  vgg_params = jax.device_put(weights.load_perceptual_params(config), rep)
  writer = loop.create_writer(workdir)
  runs.write_config_json(workdir, config)
  root = jax.random.PRNGKey(config.seed)

  previous: HPNState | None = None
  state = None
  try:
    for level in range(len(sizes)):
      trainer = HPNTrainer(config, level)
      ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", trainer.name), config.keep_checkpoints)
      try:
        latest = ckpt.latest_step()
        if latest is not None and latest >= trainer.steps:
          logging.info("%s: complete (%d steps), skipped", trainer.name, latest)
          previous = None
          continue
        state = _train_level(config, workdir, trainer, ckpt, latest, previous, level, root, mesh, rep,
                             local_batch, train_examples, eval_examples, vgg_params, writer)
        previous = state
      finally:
        ckpt.close()
  finally:
    writer.close()
  if state is None:                      # every level was already complete
    state = _restore_level(config, workdir, len(sizes) - 1, rep)
  return state


def _restore_level(config, workdir, level: int, rep) -> HPNState:
  """The final state of a finished level, restored from its checkpoint folder."""
  trainer = HPNTrainer(config, level)
  abstract = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0))
  abstract = checkpoints.abstract_like(abstract, rep)
  ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", trainer.name), config.keep_checkpoints)
  try:
    return ckpt.restore(abstract)
  finally:
    ckpt.close()


def _train_level(config, workdir, trainer, ckpt, latest, previous, level, root, mesh, rep, local_batch,
                 train_examples, eval_examples, vgg_params, writer) -> HPNState:
  from hpt_jax.train import loop

  dataset = _level_dataset(config, train_examples, trainer, True, local_batch)
  train_iter = iter(dataset)
  key = jax.random.fold_in(root, level)
  if latest is not None:
    abstract = checkpoints.abstract_like(jax.eval_shape(trainer.init_state, key), rep)
    state = ckpt.restore(abstract, train_iter)
    logging.info("%s: resumed at step %d", trainer.name, int(state.step))
  elif level == 0:
    state = parallel.initialize(trainer.init_state, key, out_shardings=rep, what=f"{trainer.name}'s networks")
  else:
    if previous is None:
      previous = _restore_level(config, workdir, level - 1, rep)
    state, carried, added = trainer.grow_from(jax.device_get(previous), key)
    state = jax.device_put(state, rep)
    logging.info("%s: grown from the previous level; carried %s; new %s", trainer.name, carried, added)
  logging.info("%s: %s parameters, %d local descriptors%s, %d steps", trainer.name,
               {k: f"{runs.count_params(v) / 1e6:.3f}M" for k, v in state.params.items()}, trainer.num_local,
               " (local discriminator)" if trainer.use_local_disc else "", trainer.steps)

  eval_ds = _level_dataset(config, eval_examples, trainer, False, min(config.batch_size, len(eval_examples)))
  eval_batches = list(eval_ds)
  sample_n = min(4, len(eval_examples))
  sample_batch = jax.device_put(_model_inputs({k: v[:sample_n] for k, v in eval_batches[0].items()}), rep)
  step_fn = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  generate_fn = jax.jit(trainer.generate)

  def sample_fn(step, state):
    out = np.asarray(generate_fn(state.params, state.batch_stats, sample_batch))
    host = jax.device_get(sample_batch)
    grid = image_io.image_grid([host["source_image"], _keypoint_panel(host["target_keypoints"], trainer),
                            out, host["target_image"]])
    image_io.save_png(os.path.join(workdir, "samples", f"{trainer.name}_step_{step}.png"), grid)
    return {"samples/source|pose|generated|target": grid}

  offset = level * trainer.steps          # TensorBoard x-axis: global step over the levels
  prefix = f"{trainer.name}/"
  state, scalars = loop.run_steps(
      state, lambda s, b: step_fn(s, b, vgg_params),
      lambda: parallel.shard_batch(_model_inputs(next(train_iter)), mesh),
      total_steps=trainer.steps, ckpt=ckpt, data_iter=train_iter, writer=writer,
      log_every=config.log_every_steps, checkpoint_every=config.checkpoint_every_steps,
      sample_every=config.sample_every_steps, sample_fn=sample_fn, step_offset=offset, prefix=prefix)
  step = int(state.step)
  result = level_eval_metrics(trainer, state, eval_batches)
  result.update({"level": trainer.name, "step": step})   # final train losses: <workdir>/summary.json
  writer.write_scalars(offset + step, {prefix + k: v for k, v in result.items() if k.startswith("eval/")})
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  with open(os.path.join(workdir, "eval", f"{trainer.name}.json"), "w") as f:
    json.dump(result, f, indent=2)
  logging.info("%s done: %s", trainer.name, {k: round(v, 4) for k, v in result.items() if k.startswith("eval/")})
  return state


def _keypoint_panel(keypoints: np.ndarray, trainer: HPNTrainer) -> np.ndarray:
  """Target pose as an RGB panel at the level size (for the sample grid)."""
  from hpt_jax import pose
  h, w = trainer.image_size
  heat = pose.keypoints_to_heatmaps(np.asarray(keypoints, np.float32), h, w, max(1.0, h / 64))
  return image_io.pose_to_rgb(heat)


# ---------------------------------------------------------------------- benchmark
def synthetic_batch(batch_size: int, image_size, num_local: int, seed: int = 0) -> dict:
  """Random HPN host batch: images in [-1, 1], keypoints inside the image, their local boxes."""
  from hpt_jax import pose
  rng = np.random.default_rng(seed)
  h, w = image_size
  kp = np.stack([rng.uniform(0, h - 1, (batch_size, 18)), rng.uniform(0, w - 1, (batch_size, 18))], -1)
  batch = {
      "source_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "target_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "target_keypoints": kp.astype(np.float32),
  }
  if num_local:
    batch["target_boxes"], batch["target_box_valid"] = pose.local_descriptor_boxes(kp, num_local, (h, w))
  return batch


def benchmark_workload(config, level: int | None = None, phase: str | None = None) -> dict:
  """What ``launch/benchmark.py`` times for HPN: one step of level ``level`` (default the last,
  e.g. 1024² for ``hpt_jax/configs/hpn_1024.py``). Keys as :func:`hpt_jax.train.drn.benchmark_workload`.

  Raises:
    ValueError: ``level`` outside the config's levels.
  """
  del phase
  trainer = HPNTrainer(config, -1 if level is None else level)
  return {"trainer": trainer, "image_size": trainer.image_size, "init": trainer.init_state, "traceable_init": True,
          "batch": lambda b: synthetic_batch(b, trainer.image_size, trainer.num_local, config.seed),
          "step": trainer.train_step, "extra": lambda vgg_params: vgg_params,
          "record": {"level": trainer.name, "local_descriptors": trainer.num_local,
                     "local_discriminator": trainer.use_local_disc}}

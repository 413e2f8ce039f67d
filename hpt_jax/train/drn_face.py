"""Training DRN's face enhancing module on face-pair crops (DRN §IV-A, §V; footnote 1: trained separately).

Paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE TIP 2021, arXiv:2005.12494. Model: :mod:`hpt_jax.models.drn_face`; data:
:mod:`hpt_jax.input_pipeline.faces`; config: ``hpt_jax/configs/deepfashion_drn_face.py``.

One call of :meth:`FaceTrainer.train_step` is one cycle on one batch of face pairs, the body's
1-1-3 cycle (:mod:`hpt_jax.train.drn`) without the pose branch:

1. **Generator.** Ĩ_F = G_F(source face crop, target sketch H_F); Eq. 7,
   L_2 = λ_recon·L1 + λ_per·L_per + λ_sty·L_sty + λ_GAN·(L_GAN(D_A) + L_GAN(D_S)), against the
   target face crop, updates G_F (D_A conditioned on the source crop, D_S on H_F; LSGAN).
2. **Discriminators.** ``d_updates`` (K = 3) updates of D_A and D_S on this batch's detached Ĩ_F.

Loss weights, optimiser (RAdam, decoupled weight decay 1e-5) and betas are the body's; the
learning rate is held at 1e-4 for the whole run (DRN §V). The state is
:class:`hpt_jax.train.drn.DRNState` (same fields), saved by Orbax in ``checkpoints/drn_face/``
and resumed by the shared loop (:mod:`hpt_jax.train.loop`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hpt_jax import errors, image_io, losses, parallel, runs
from hpt_jax.models import drn_face
from hpt_jax.models.vgg import VGG
from hpt_jax.train import optim
from hpt_jax.train.drn import DRNState, compute_dtype

NETWORKS = drn_face.NETWORKS
DISCRIMINATORS = ("disc_appearance", "disc_shape")
#: The checkpoint folder under ``<workdir>/checkpoints/``.
CHECKPOINT_NAME = "drn_face"


class FaceTrainer:
  """Builds the face module's networks, optimiser and pure step from a ``deepfashion_drn_face`` config."""

  def __init__(self, config, total_steps: int):
    self.config = config
    dtype = compute_dtype(config)
    self.models = drn_face.build_models(config.model, dtype)
    self.vgg = VGG(arch=config.perceptual.network, taps=tuple(config.perceptual.taps), dtype=dtype)
    o = config.optimizer
    self.tx = optim.radam_decoupled(o.b1, o.b2, o.eps, o.weight_decay)
    self.lr_fn = optim.hold_then_linear_decay(o.learning_rate, optim.hold_steps(o.hold_fraction, total_steps),
                                              total_steps)
    self.crop = int(config.face_data.crop_size)

  def init_state(self, rng: jax.Array) -> DRNState:
    """Initialises G_F, D_A, D_S and their optimiser states."""
    keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS) + 1)[:len(NETWORKS)]))
    params = {n: self.models[n].init(keys[n], *drn_face.init_inputs(n, self.crop))["params"] for n in NETWORKS}
    return DRNState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state={k: self.tx.init(v) for k, v in params.items()},
                    rng=jax.random.split(rng, len(NETWORKS) + 2)[-1])

  def _disc(self, name, params, image, batch, rng):
    condition = batch["source_face"] if name == "disc_appearance" else batch["target_sketch"]
    return self.models[name].apply({"params": params}, image, condition, False, rngs={"dropout": rng})

  def generate(self, params, batch) -> jax.Array:
    """:func:`hpt_jax.models.drn_face.generate` with this trainer's networks."""
    return drn_face.generate(self.models, params, batch)

  def train_step(self, state: DRNState, batch: dict[str, jax.Array], vgg_params) -> tuple[DRNState, dict]:
    """One cycle (module docstring). Pure; jit with ``donate_argnums=0``.

    Args:
      state: :class:`hpt_jax.train.drn.DRNState` of the face networks.
      batch: ``source_face``/``target_face`` float32 [B, S, S, 3] in [-1, 1], ``target_sketch``
        float32 [B, S, S, 1] in [0, 1].
      vgg_params: frozen perceptual-network parameters.

    Returns:
      ``(new_state, metrics)``: float32 scalars (every loss term, the rate, gradient norms).
    """
    w = self.config.loss
    lr = self.lr_fn(state.step)
    k_a, k_s, k_disc = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    target = batch["target_face"]
    target_features = jax.lax.stop_gradient(self.vgg.apply({"params": vgg_params}, target))
    params, opt_state = dict(state.params), dict(state.opt_state)
    metrics = {"lr": lr}

    def gen_loss(p):
      face = self.models["face_generator"].apply({"params": p}, batch["source_face"], batch["target_sketch"])
      feats = self.vgg.apply({"params": vgg_params}, face)
      l1 = losses.l1(face, target)
      per = losses.perceptual(feats, target_features)
      sty = losses.gram_style(feats, target_features, w.style_normalization)
      gan_a = losses.lsgan_generator(self._disc("disc_appearance", params["disc_appearance"], face, batch, k_a))
      gan_s = losses.lsgan_generator(self._disc("disc_shape", params["disc_shape"], face, batch, k_s))
      total = w.l1 * l1 + w.perceptual * per + w.style * sty + w.gan * (gan_a + gan_s)
      return total, ({"face/l1": l1, "face/perceptual": per, "face/style": sty, "face/gan_appearance": gan_a,
                      "face/gan_shape": gan_s, "face/total": total}, face)

    grads, (aux, face) = jax.grad(gen_loss, has_aux=True)(params["face_generator"])
    metrics.update(aux)
    metrics["grad_norm/face_generator"] = optim.global_norm(grads)
    updates, opt_state["face_generator"] = self.tx.update(grads, opt_state["face_generator"], params["face_generator"])
    params["face_generator"] = optim.apply_updates(params["face_generator"], updates, lr)

    fake = jax.lax.stop_gradient(face)

    def disc_loss(d_params, key):
      out, total = {}, jnp.zeros((), jnp.float32)
      for i, name in enumerate(DISCRIMINATORS):
        k_real, k_fake = jax.random.split(jax.random.fold_in(key, i))
        out[name] = losses.lsgan_discriminator(self._disc(name, d_params[name], target, batch, k_real),
                                               self._disc(name, d_params[name], fake, batch, k_fake))
        total = total + out[name]
      return total, out

    d_params = {k: params[k] for k in DISCRIMINATORS}
    d_opt = {k: opt_state[k] for k in DISCRIMINATORS}
    history = []
    for key in jax.random.split(k_disc, self.config.d_updates):    # unrolled, as the body's (train/drn.py)
      g, d_losses = jax.grad(disc_loss, has_aux=True)(d_params, key)
      for name in DISCRIMINATORS:
        updates, d_opt[name] = self.tx.update(g[name], d_opt[name], d_params[name])
        d_params[name] = optim.apply_updates(d_params[name], updates, lr)
      history.append((d_losses, {n: optim.global_norm(g[n]) for n in DISCRIMINATORS}))
    for name in DISCRIMINATORS:
      params[name], opt_state[name] = d_params[name], d_opt[name]
      metrics[f"disc/{name.removeprefix('disc_')}"] = jnp.mean(jnp.stack([h[0][name] for h in history]))
      metrics[f"grad_norm/{name}"] = jnp.mean(jnp.stack([h[1][name] for h in history]))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


# ---------------------------------------------------------------------------- data
def cache_path(config) -> str:
  """``config.face_data.cache``, or ``faces.npz`` next to ``config.data.annotations``."""
  from hpt_jax.input_pipeline import faces
  return config.face_data.cache or faces.default_cache_path(config.data)


def training_pairs(config, examples, cache, logger=logging.info) -> list:
  """The face pairs of ``examples`` and, with ``face_data.mirrored_self_pairs``, one pair per
  frontal image of them whose source is its own crop mirrored (:class:`hpt_jax.input_pipeline.faces.FacePair`).

  Raises:
    hpt_jax.errors.ConfigError: no face pair at all (names the cache and its counts).
  """
  from hpt_jax.input_pipeline import faces
  pairs = faces.face_pairs(examples, cache)
  n_real = len(pairs)
  if config.face_data.mirrored_self_pairs:
    seen = set()
    for e in examples:
      for side in ("source", "target"):
        path = getattr(e, f"{side}_path")
        lm = cache.frontal_landmarks(path)
        if lm is None or path in seen:
          continue
        seen.add(path)
        kp, crop_x = getattr(e, f"{side}_keypoints"), getattr(e, f"{side}_crop_x")
        same = dataclasses.replace(e, source_path=path, target_path=path, source_keypoints=kp,
                                   target_keypoints=kp, source_crop_x=crop_x, target_crop_x=crop_x)
        pairs.append(faces.FacePair(same, lm, lm, mirror_source=True))
  logger(f"face module: {n_real} face pairs of {len(examples)} pairs (both faces frontal), "
         f"{len(pairs) - n_real} mirrored self-pairs; cache counts {cache.counts()}")
  if not pairs:
    raise errors.ConfigError(f"no face pair in {config.data.pairs} with the face cache {cache_path(config)} "
                             f"({cache.counts()}): the face module needs pairs whose two images have a frontal face")
  return pairs


def total_steps(config, n_pairs: int) -> int:
  """``config.total_steps`` if > 0, else ``ceil(total_epochs · n_pairs / batch_size)``."""
  if int(config.total_steps) > 0:
    return int(config.total_steps)
  return max(1, math.ceil(int(config.total_epochs) * n_pairs / int(config.batch_size)))


def train_and_evaluate(config, workdir: str) -> DRNState:
  """Trains the face module; resumes from ``<workdir>/checkpoints/drn_face/`` if it has checkpoints.

  Workdir layout: ``checkpoints/drn_face/<step>/`` (Orbax: state + data iterator), TensorBoard
  events, ``samples/step_<N>.png`` (source face | sketch | generated | target face), ``config.json``.

  Raises:
    hpt_jax.input_pipeline.faces.FaceCacheError: no usable face cache.
    hpt_jax.errors.ConfigError: no face pair.
    hpt_jax.train.loop.NonFiniteLossError: a loss became NaN/Inf.
  """
  from hpt_jax import checkpoints, weights
  from hpt_jax.input_pipeline import faces, pipeline
  from hpt_jax.train import loop

  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  local_batch = parallel.per_process_batch_size(config.batch_size, mesh)
  cache = faces.FaceCache.load(cache_path(config))
  pairs = training_pairs(config, pipeline.load_examples(config.data, logger=logging.info), cache)
  steps = total_steps(config, len(pairs))
  logging.info("face module: %d steps (%s epochs of %d pairs at batch %d)", steps,
               f"{steps * config.batch_size / len(pairs):.1f}", len(pairs), config.batch_size)
  eval_pairs = faces.face_pairs(pipeline.load_examples(config.eval_data, logger=logging.info), cache) or pairs

  trainer = FaceTrainer(config, steps)
  rep = parallel.replicated(mesh)
  state = parallel.initialize(trainer.init_state, jax.random.PRNGKey(config.seed), out_shardings=rep,
                              what="the face-module networks")
  vgg_params = jax.device_put(weights.load_perceptual_params(config), rep)
  logging.info("parameters: %s", {k: f"{runs.count_params(v) / 1e6:.3f}M" for k, v in state.params.items()})
  box_scale = float(config.face_data.box_scale)
  dataset = pipeline.batched_dataset(faces.FacePairLoader(pairs, box_scale), len(pairs), batch_size=local_batch,
                                     seed=config.seed, train=True, flip=config.data.flip,
                                     shard_index=jax.process_index(), shard_count=jax.process_count())
  train_iter = iter(dataset)
  ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", CHECKPOINT_NAME), config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, train_iter)
    logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
  writer = loop.create_writer(workdir)
  runs.write_config_json(workdir, config)
  step_fn = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  generate_fn = jax.jit(trainer.generate)
  loader = faces.FacePairLoader(eval_pairs[:4], box_scale)
  sample = [loader.load(i, False) for i in range(min(4, len(eval_pairs)))]
  sample_batch = jax.device_put({k: np.stack([s[k] for s in sample]) for k in sample[0]}, rep)

  def sample_fn(step, state):
    face = np.asarray(jax.device_get(generate_fn(state.params, sample_batch)))
    host = jax.device_get(sample_batch)
    grid = image_io.image_grid([host["source_face"], np.repeat(host["target_sketch"] * 2 - 1, 3, axis=-1),
                                np.clip(face, -1, 1), host["target_face"]])
    image_io.save_png(os.path.join(workdir, "samples", f"step_{step}.png"), grid)
    return {"samples/source_face|sketch|generated|target_face": grid}

  try:
    state, _ = loop.run_steps(
        state, lambda s, b: step_fn(s, b, vgg_params),
        lambda: parallel.shard_batch(dict(next(train_iter)), mesh), total_steps=steps, ckpt=ckpt,
        data_iter=train_iter, writer=writer, log_every=config.log_every_steps,
        checkpoint_every=config.checkpoint_every_steps, sample_every=config.sample_every_steps, sample_fn=sample_fn)
  finally:
    ckpt.close()
    writer.close()
  return state


def benchmark_workload(config, level: int | None = None, phase: str | None = None) -> dict:
  """What ``launch/benchmark.py`` times for the face module: one cycle on random 64×64 crops
  (the keys of :func:`hpt_jax.train.drn.benchmark_workload`)."""
  del level, phase
  s = int(config.face_data.crop_size)
  trainer = FaceTrainer(config, max(1, int(config.total_steps) or 1000))

  def batch(b):
    rng = np.random.default_rng(config.seed)
    return {"source_face": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
            "target_face": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
            "target_sketch": (rng.uniform(0, 1, (b, s, s, 1)) > 0.9).astype(np.float32)}

  return {"trainer": trainer, "image_size": (s, s), "init": trainer.init_state, "traceable_init": True,
          "batch": batch, "step": trainer.train_step, "extra": lambda vgg_params: vgg_params,
          "record": {"d_updates": int(config.d_updates)}}

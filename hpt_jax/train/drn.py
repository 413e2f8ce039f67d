"""DRN train state and the pure 1-1-3 training cycle (DRN §IV-C, Algorithm 1).

Paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE Transactions on Image Processing 2021, arXiv:2005.12494. Reference code: Lotayou/Pose-Transfer
@ 164c91b (branch rate_net), ``models/RATE_NET.py`` ``train_one_step``.

One call of :meth:`DRNTrainer.train_step` is one cycle on one batch:

1. **Pose branch.** G_P forward, L_1 = λ_recon·L1 + λ_per·L_per on the coarse output Ĩ_c
   (Eq. 5), one update of G_P.
2. **Both branches.** G_P (with its new weights) and G_T are run again — a recompute, as the
   paper's Algorithm 1 writes it (the reference code reuses the stale forward of step 1) — and
   L_2 = λ_recon·L1 + λ_per·L_per + λ_sty·L_sty + λ_GAN·L_GAN (Eq. 7) on the refined output
   Ĩ_t = Ĩ_c + R_t updates G_P and G_T.
3. **Discriminators.** ``d_updates`` (K = 3) updates of D_A and D_S on this batch's detached Ĩ_t
   from step 2. Algorithm 1 draws a new batch for each of the K updates; we reuse the batch as the
   reference code does (``RATE_NET.train_one_step``), which keeps one step = one batch and lets
   the D updates reuse the generator's forward pass.

Loss weights default to the paper's (λ_GAN, λ_per, λ_recon, λ_sty) = (1, 5, 10, 5), §V. The
reference code uses λ_GAN = 5, a Wasserstein feature loss instead of L_per/L_sty, and an image
pool of 50 for the discriminators; we follow the paper and use no pool.

The step is a pure function of ``(state, batch, perceptual_params)``; jit it with the state
donated. Under ``jax.jit`` with the batch sharded over a ``'data'`` mesh axis and the state
replicated, the gradient all-reduce is inserted by the compiler (:mod:`hpt_jax.train.loop`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hpt_jax import checkpoints, errors, image_io, parallel, runs
from hpt_jax import losses
from hpt_jax.models import drn
from hpt_jax.models.vgg import VGG
from hpt_jax.train import optim

NETWORKS = ("pose_branch", "detail", "disc_appearance", "disc_shape")
GENERATORS = ("pose_branch", "detail")
DISCRIMINATORS = ("disc_appearance", "disc_shape")


@flax.struct.dataclass
class DRNState:
  """Everything a DRN run needs to continue, as one pytree (saved whole by Orbax).

  Attributes:
    step: int32 scalar, completed 1-1-3 cycles.
    params: ``{network: params}`` for ``NETWORKS``; float32.
    opt_state: ``{network: optax state}`` (RAdam moments and counts).
    rng: uint32 [2] root PRNG key; each cycle uses ``fold_in(rng, step)`` so a resumed run draws
      the same dropout masks as an uninterrupted one.
  """

  step: jax.Array
  params: dict[str, Any]
  opt_state: dict[str, Any]
  rng: jax.Array


def compute_dtype(config) -> Any:
  """``config.dtype`` ('float32' | 'bfloat16') → jnp dtype. Raises ValueError naming the field."""
  if config.dtype not in ("float32", "bfloat16"):
    raise errors.ConfigError(f"config.dtype={config.dtype!r}: expected 'float32' or 'bfloat16'")
  return jnp.dtype(config.dtype)


class DRNTrainer:
  """Builds the DRN networks, the optimiser and the pure step functions from a config.

  Args:
    config: the resolved ``hpt_jax/configs/deepfashion_drn.py`` config (fields ``model``, ``loss``,
      ``optimizer``, ``perceptual``, ``dtype``, ``d_updates``, ``total_steps``).
  """

  def __init__(self, config):
    self.config = config
    dtype = compute_dtype(config)
    self.models = drn.build_models(config.model, dtype)
    self.vgg = VGG(arch=config.perceptual.network, taps=tuple(config.perceptual.taps), dtype=dtype)
    o = config.optimizer
    self.tx = optim.radam_decoupled(o.b1, o.b2, o.eps, o.weight_decay)
    self.lr_fn = optim.hold_then_linear_decay(o.learning_rate, optim.hold_steps(o.hold_fraction, config.total_steps),
                                              config.total_steps)
    self.loss_weights = config.loss

  # ------------------------------------------------------------------ init
  def init_state(self, rng: jax.Array, image_shape: tuple[int, int]) -> DRNState:
    """Initialises all four networks and their optimiser states.

    Args:
      rng: PRNG key (uint32 [2]).
      image_shape: (H, W) of the training images; both divisible by 2**model.n_downsampling.

    Raises:
      ValueError: H or W not divisible by 2**n_downsampling (names ``data.image_size``).
    """
    keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS) + 1)[:4]))
    params = {name: self.models[name].init(keys[name], *drn.init_inputs(self.config.model, name, image_shape))["params"]
              for name in NETWORKS}
    opt_state = {k: self.tx.init(v) for k, v in params.items()}
    return DRNState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    rng=jax.random.split(rng, 5)[4])

  # --------------------------------------------------------------- forward
  def _pose_branch(self, params, batch, deterministic, rng):
    return self.models["pose_branch"].apply(
        {"params": params}, batch["source_image"], batch["source_pose"], batch["target_pose"],
        deterministic, rngs=None if deterministic else {"dropout": rng})

  def _detail(self, params, batch, guidance):
    return self.models["detail"].apply({"params": params}, batch["source_image"], guidance)

  def _disc(self, name, params, image, batch, deterministic, rng):
    condition = batch["source_image"] if name == "disc_appearance" else batch["target_pose"]
    return self.models[name].apply({"params": params}, image, condition, deterministic,
                                   rngs=None if deterministic else {"dropout": rng})

  def _features(self, vgg_params, images):
    return self.vgg.apply({"params": vgg_params}, images)

  def generate(self, params, batch) -> dict[str, jax.Array]:
    """:func:`hpt_jax.models.drn.generate` with this trainer's networks (``params`` = ``state.params``)."""
    return drn.generate(self.models, params, batch)

  # ------------------------------------------------------------------ step
  def train_step(self, state: DRNState, batch: dict[str, jax.Array], vgg_params) -> tuple[DRNState, dict]:
    """One 1-1-3 cycle (module docstring). Pure; jit with ``donate_argnums=0``.

    Args:
      state: :class:`DRNState`.
      batch: ``source_image``/``target_image`` [B, H, W, 3] in [-1, 1], ``source_pose``/
        ``target_pose`` [B, H, W, 18] in [0, 1] (other keys are ignored).
      vgg_params: frozen perceptual-network parameters.

    Returns:
      ``(new_state, metrics)``; metrics are float32 scalars: every loss term, the learning rate and
      the gradient norm of every update.
    """
    w = self.loss_weights
    lr = self.lr_fn(state.step)
    rng = jax.random.fold_in(state.rng, state.step)
    k_coarse, k_refined, k_gan_a, k_gan_s, k_disc = jax.random.split(rng, 5)
    target = batch["target_image"]
    target_features = jax.lax.stop_gradient(self._features(vgg_params, target))
    params, opt_state = dict(state.params), dict(state.opt_state)
    metrics = {"lr": lr}

    # (1) Pose-transfer branch on L_1 (Eq. 5) of the coarse output.
    def coarse_loss(p_pose):
      _, coarse = self._pose_branch(p_pose, batch, False, k_coarse)
      l1 = losses.l1(coarse, target)
      per = losses.perceptual(self._features(vgg_params, coarse), target_features)
      total = w.l1 * l1 + w.perceptual * per
      return total, {"coarse/l1": l1, "coarse/perceptual": per, "coarse/total": total}

    grads, aux = jax.grad(coarse_loss, has_aux=True)(params["pose_branch"])
    metrics.update(aux)
    metrics["grad_norm/pose_branch_coarse"] = optim.global_norm(grads)
    updates, opt_state["pose_branch"] = self.tx.update(grads, opt_state["pose_branch"], params["pose_branch"])
    params["pose_branch"] = optim.apply_updates(params["pose_branch"], updates, lr)

    # (2) Both branches on L_2 (Eq. 7) of the refined output; discriminators fixed.
    def refined_loss(gen_params):
      guidance, coarse = self._pose_branch(gen_params["pose_branch"], batch, False, k_refined)
      refined = coarse + self._detail(gen_params["detail"], batch, guidance)
      feats = self._features(vgg_params, refined)
      l1 = losses.l1(refined, target)
      per = losses.perceptual(feats, target_features)
      sty = losses.gram_style(feats, target_features, w.style_normalization)
      gan_a = losses.lsgan_generator(self._disc("disc_appearance", params["disc_appearance"], refined, batch,
                                                False, k_gan_a))
      gan_s = losses.lsgan_generator(self._disc("disc_shape", params["disc_shape"], refined, batch, False, k_gan_s))
      total = w.l1 * l1 + w.perceptual * per + w.style * sty + w.gan * (gan_a + gan_s)
      aux = {"refined/l1": l1, "refined/perceptual": per, "refined/style": sty,
             "refined/gan_appearance": gan_a, "refined/gan_shape": gan_s, "refined/total": total}
      return total, (aux, refined)

    gen_params = {k: params[k] for k in GENERATORS}
    grads, (aux, refined) = jax.grad(refined_loss, has_aux=True)(gen_params)
    metrics.update(aux)
    for k in GENERATORS:
      metrics[f"grad_norm/{k}"] = optim.global_norm(grads[k])
      updates, opt_state[k] = self.tx.update(grads[k], opt_state[k], params[k])
      params[k] = optim.apply_updates(params[k], updates, lr)

    # (3) K discriminator updates on the detached refined output of this batch.
    fake = jax.lax.stop_gradient(refined)

    def disc_loss(d_params, key):
      out = {}
      total = jnp.zeros((), jnp.float32)
      for i, name in enumerate(DISCRIMINATORS):
        k_real, k_fake = jax.random.split(jax.random.fold_in(key, i))
        real = self._disc(name, d_params[name], target, batch, False, k_real)
        fake_scores = self._disc(name, d_params[name], fake, batch, False, k_fake)
        out[name] = losses.lsgan_discriminator(real, fake_scores)
        total = total + out[name]
      return total, out

    def disc_update(carry, key):
      d_params, d_opt = carry
      grads, d_losses = jax.grad(disc_loss, has_aux=True)(d_params, key)
      new_params, new_opt = {}, {}
      for name in DISCRIMINATORS:
        updates, new_opt[name] = self.tx.update(grads[name], d_opt[name], d_params[name])
        new_params[name] = optim.apply_updates(d_params[name], updates, lr)
      norms = {name: optim.global_norm(grads[name]) for name in DISCRIMINATORS}
      return (new_params, new_opt), (d_losses, norms)

    # A Python loop (unrolled K times), not lax.scan: on XLA:CPU a scan body holding these
    # convolutions ran ~10x slower than the unrolled updates (measured, cpu preset).
    carry = ({k: params[k] for k in DISCRIMINATORS}, {k: opt_state[k] for k in DISCRIMINATORS})
    history = []
    for key in jax.random.split(k_disc, self.config.d_updates):
      carry, out = disc_update(carry, key)
      history.append(out)
    d_params, d_opt = carry
    for name in DISCRIMINATORS:
      params[name], opt_state[name] = d_params[name], d_opt[name]
      metrics[f"disc/{name.removeprefix('disc_')}"] = jnp.mean(jnp.stack([h[0][name] for h in history]))
      metrics[f"grad_norm/{name}"] = jnp.mean(jnp.stack([h[1][name] for h in history]))

    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


# ---------------------------------------------------------------- driver


def sample_columns(generate_fn, params, batch) -> list[np.ndarray]:
  """The sample-grid columns: source | target pose | coarse | refined | ground truth ([B, H, W, 3] each)."""
  out = jax.device_get(generate_fn(params, batch))
  host = jax.device_get(batch)
  return [host["source_image"], image_io.pose_to_rgb(host["target_pose"]), out["coarse"],
          np.clip(out["refined"], -1, 1), host["target_image"]]


def load_pose_branch(directory: str, config, target: Any, sharding=None) -> Any:
  """G_P's parameters from an imported PATN folder (``config.init.pose_branch_checkpoint``).

  The folder is the inference-only layout written by ``launch/import_checkpoint.py --family=patn``
  (:func:`hpt_jax.inference.export`: ``inference.json`` + ``variables/``); only
  ``pose_branch/params`` is read (Orbax partial restore). DRN's ablation "PB Fixed" (DRN paper,
  Table II) starts G_P from PATN's released weights.

  Args:
    directory: the imported folder.
    config: the DRN config (its ``model`` fields are compared with the imported model's).
    target: G_P's freshly initialised params (shapes, dtypes).
    sharding: where to place the restored arrays.

  Returns:
    the params tree, same structure as ``target``.

  Raises:
    hpt_jax.checkpoints.CheckpointNotFoundError: no ``inference.json`` in ``directory``.
    hpt_jax.errors.ConfigError: batch-norm weights (Market-1501; not trainable here), or shapes that
      do not fit ``config.model`` (the message names the imported model's fields to set).
  """
  import json

  meta_path = os.path.join(directory, "inference.json")
  if not os.path.isfile(meta_path):
    raise checkpoints.CheckpointNotFoundError(
        f"config.init.pose_branch_checkpoint={directory!r}: no inference.json (import the weights first: "
        "python launch/import_checkpoint.py --family=patn --torch_checkpoint=FILE --config=deepfashion_patn "
        f"--workdir={directory})")
  with open(meta_path) as f:
    meta = json.load(f)
  imported = meta.get("config", {}).get("model", {})
  fields = ("ngf", "n_downsampling", "n_blocks", "activation", "norm", "upsampling")
  hint = ", ".join(f"--config.model.{k}={imported[k]}" for k in fields if k in imported)
  if imported.get("norm") == "batch":
    raise errors.ConfigError(f"config.init.pose_branch_checkpoint={directory!r} holds batch-norm weights "
                             "(PATN Market-1501): DRN trains with instance norm only")
  differ = [k for k in fields if k in imported and config.model.get(k) != imported[k]]
  if "pose_branch" not in meta.get("networks", []):
    raise errors.ConfigError(f"config.init.pose_branch_checkpoint={directory!r} has no pose_branch network")
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
  try:
    restored = checkpoints.restore_partial(os.path.join(directory, "variables"), {"pose_branch": {"params": shapes}})
  except checkpoints.CheckpointMismatchError as e:
    raise errors.ConfigError(f"config.init.pose_branch_checkpoint={directory!r} does not fit config.model "
                             f"(set {hint}): {e}") from e
  if differ:
    logging.warning("G_P starts from %s, whose model fields differ: %s (same shapes; set %s to match)",
                    directory, {k: (config.model.get(k), imported[k]) for k in differ}, hint)
  return restored["pose_branch"]["params"]


def train_and_evaluate(config, workdir: str) -> DRNState:
  """Trains the DRN for ``config.total_steps`` cycles, resuming from ``workdir`` if it has checkpoints.

  Workdir layout: ``checkpoints/drn/<step>/`` (Orbax: state + data-iterator state), TensorBoard
  events at the top, ``samples/step_<N>.png``, ``config.json``.

  Raises:
    hpt_jax.input_pipeline.patn_format.DataError: bad data (names the file and row).
    hpt_jax.weights.WeightsNotFoundError: perceptual weights missing.
    hpt_jax.train.loop.NonFiniteLossError: a loss became NaN/Inf (names it and the step).
  """
  from hpt_jax.input_pipeline import pipeline
  from hpt_jax.train import loop

  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  local_batch = parallel.per_process_batch_size(config.batch_size, mesh)
  image_size = tuple(config.data.image_size)

  train_examples = pipeline.load_examples(config.data, logger=logging.info)
  eval_examples = pipeline.load_examples(config.eval_data, logger=logging.info)
  from hpt_jax import weights
  vgg_params = weights.load_perceptual_params(config)

  trainer = DRNTrainer(config)
  rep = parallel.replicated(mesh)
  state = parallel.initialize(functools.partial(trainer.init_state, image_shape=image_size),
                          jax.random.PRNGKey(config.seed), out_shardings=rep, what="the DRN networks")
  vgg_params = jax.device_put(vgg_params, rep)
  logging.info("parameters: %s", {k: f"{runs.count_params(v) / 1e6:.2f}M" for k, v in state.params.items()})

  dataset = pipeline.create_pair_dataset(
      train_examples, image_size=image_size, sigma=config.pose.sigma, batch_size=local_batch,
      seed=config.seed, train=True, flip=config.data.flip, shard_index=jax.process_index(),
      shard_count=jax.process_count(), num_workers=config.data.num_workers)
  train_iter = iter(dataset)

  ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", config.model_name),
                                config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, train_iter)
    logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
  start = int(state.step)
  init_dir = config.init.pose_branch_checkpoint if "init" in config else ""
  if start == 0 and init_dir:
    pose_params = load_pose_branch(init_dir, config, state.params["pose_branch"], rep)
    state = state.replace(params={**state.params, "pose_branch": pose_params})
    logging.info("G_P initialised from %s", init_dir)

  writer = loop.create_writer(workdir)
  runs.write_config_json(workdir, config)
  if start == 0:
    writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                          for k, v in runs.flatten_config(config).items()})
  step_fn = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  generate_fn = jax.jit(trainer.generate)
  sample_n = min(4, len(eval_examples))
  sample_ds = pipeline.create_pair_dataset(
      eval_examples[:sample_n], image_size=image_size, sigma=config.pose.sigma, batch_size=sample_n,
      seed=config.seed, train=False, flip=False, drop_remainder=False)
  sample_batch = jax.device_put(pipeline.model_inputs(next(iter(sample_ds))), rep)

  def sample_fn(step, state):
    grid = image_io.image_grid(sample_columns(generate_fn, state.params, sample_batch))
    image_io.save_png(os.path.join(workdir, "samples", f"step_{step}.png"), grid)
    return {"samples/source|pose|coarse|refined|target": grid}

  eval_fn = None
  if config.eval_every_steps:
    from hpt_jax import evaluation
    eval_batches = evaluation.training_eval_batches(config)
    cheap_metrics = evaluation.cheap_metrics_fn(functools.partial(drn.generate, trainer.models))
    eval_fn = lambda state: cheap_metrics(state.params, eval_batches)  # noqa: E731

  try:
    state, _ = loop.run_steps(
        state, lambda s, b: step_fn(s, b, vgg_params),
        lambda: parallel.shard_batch(pipeline.model_inputs(next(train_iter)), mesh),
        total_steps=config.total_steps, ckpt=ckpt, data_iter=train_iter, writer=writer,
        log_every=config.log_every_steps, checkpoint_every=config.checkpoint_every_steps,
        sample_every=config.sample_every_steps, sample_fn=sample_fn,
        eval_every=config.eval_every_steps, eval_fn=eval_fn)
  finally:
    ckpt.close()
    writer.close()
  return state


# ---------------------------------------------------------------- benchmark
def synthetic_batch(batch_size: int, image_size, seed: int = 0) -> dict:
  """Random host batch with the step's keys: images in [-1, 1], heatmaps in [0, 1] (float32)."""
  rng = np.random.default_rng(seed)
  h, w = image_size
  return {
      "source_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "target_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "source_pose": rng.uniform(0, 1, (batch_size, h, w, 18)).astype(np.float32),
      "target_pose": rng.uniform(0, 1, (batch_size, h, w, 18)).astype(np.float32),
  }


def benchmark_workload(config, level: int | None = None, phase: str | None = None) -> dict:
  """What ``launch/benchmark.py`` times for DRN: one 1-1-3 cycle at ``config.data.image_size``.

  Returns:
    ``{'trainer', 'image_size', 'init' (rng -> state, traceable), 'traceable_init': True,
    'batch' (batch size -> synthetic host batch), 'step' ((state, batch, extra) -> (state,
    metrics)), 'extra' (perceptual params -> the step's third argument), 'record'}``.
  """
  del level, phase
  image_size = tuple(int(s) for s in config.data.image_size)
  trainer = DRNTrainer(config)
  return {"trainer": trainer, "image_size": image_size,
          "init": functools.partial(trainer.init_state, image_shape=image_size), "traceable_init": True,
          "batch": lambda b: synthetic_batch(b, image_size, seed=config.seed),
          "step": trainer.train_step, "extra": lambda vgg_params: vgg_params,
          "record": {"d_updates": int(config.d_updates)}}

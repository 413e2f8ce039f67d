"""DIAF training: three phases on the shared loop (DIAF §3.3–3.6, §4.1).

Paper: Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019,
arXiv:1903.11326; reference code ly015/intrinsic_flow @ 94ea8f0.

Phases (``config.phases``), each with its own Orbax folder ``<workdir>/checkpoints/<phase>/``:

1. **flow** — :class:`hpt_jax.models.diaf.FlowRegressionNet` on (p1, p2) → (F, V). Loss (§3.3;
   reference ``flow_regression_model.py``): multi-scale EPE (per pixel ‖pred − target/20‖₂ at
   H/2 … H/2^n with the target average-pooled and the human mask max-pooled, normalised per
   example by its human-pixel count, scale weights ``loss.flow_scale_weights``) + cross-entropy on
   the 3 visibility classes at full resolution. Adam (β1 0.5 per §4.1 "all experiments"; rate,
   step decay and coupled L2 weight decay from the reference). The module is then frozen and
   used in inference mode (running batch-norm averages).
2. **generator** — :class:`~hpt_jax.models.diaf.DualUNetGenerator` fed (x1, p2, F, V) with
   ``F·[V < 2]`` and ``V = argmax`` from the frozen flow module (reference), and the conditional
   PatchGAN on (x1, p2, image). Loss Eq. 7: λ1·L_adv + λ2·L1 + λ3·L_perceptual; the paper gives no
   λ: (L1, perceptual, GAN) = (1, 1, 0.01) from the reference code. The GAN term is 0 before
   ``phases.generator.gan_start_step`` (paper: not in the first 5 of 10 epochs) and the
   discriminator is not updated before it either.
3. **pixel_warp** — :class:`~hpt_jax.models.diaf.PixelWarpNet` predicts z from (x̃2, x_w, F, V);
   x̂2 = z·x_w + (1 − z)·x̃2 (Eq. 3), x_w = warp(x1, F) with background pixels set to −1
   (reference). Generator and flow module frozen (inference mode: the generator as ``model.bn_mode``); only the pixel-warp net and the
   discriminator (continued from phase 2) train, on the same loss applied to x̂2, GAN on.

Each iteration updates the discriminator **before** the generator (reference), on this batch's
detached fake; the generator's GAN term then uses the updated discriminator (one generator
forward pass, pulled back with ``jax.vjp``). GAN: the vanilla (BCE) loss of Eq. 4 in its
non-saturating generator form on logits; D loss ½(BCE(real, 1) + BCE(fake, 0)). The reference
also multiplies the D loss by 0.01; Adam is invariant to that scale (up to ε), so we do not.

Perceptual loss: ``loss.perceptual_distance='l1'`` (default) is the reference code's
Σ_layers 0.125·mean|φ(x̂) − φ(x)|; ``'l2'`` is the paper's Eq. 6 form (mean squared difference per
layer, times the same layer weight). Paper and code disagree; the default follows the code because
the only λ_per available (1.0) was tuned with that form — the paper gives no λ for its own.

Batch norm: every network trains with batch statistics; under ``jax.jit`` with the batch sharded
over the ``('data',)`` mesh those are global over the sharded batch, so an 8-device step equals
the 1-device step (tests/test_diaf.py).
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
from hpt_jax import flow as flow_lib
from hpt_jax import losses
from hpt_jax.models import diaf as diaf_models
from hpt_jax.models.vgg import VGG
from hpt_jax.train import optim

PHASES = ("flow", "generator", "pixel_warp")
#: Networks trained in each phase (the others used are frozen).
TRAINED = {"flow": ("flow",), "generator": ("generator", "disc"), "pixel_warp": ("pixel_warp", "disc")}
FROZEN = {"flow": (), "generator": ("flow",), "pixel_warp": ("flow", "generator")}


@flax.struct.dataclass
class PhaseState:
  """Everything one phase needs to continue, as one pytree (saved whole by Orbax).

  Attributes:
    step: int32 scalar, completed steps of this phase.
    params: ``{network: params}`` of the networks trained in this phase (``TRAINED[phase]``).
    batch_stats: ``{network: batch-norm running statistics}``, same keys.
    opt_state: ``{network: optax state}``, same keys.
    rng: uint32 [2] PRNG key (kept for parity with the other trainers; the DIAF nets use no
      dropout).
  """

  step: jax.Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: dict[str, Any]
  rng: jax.Array


def multiscale_flow_loss(pyramid, target_flow, vis, scale_weights) -> jax.Array:
  """Multi-scale EPE loss (DIAF §3.3; reference ``models/modules.py`` ``MultiScaleFlowLoss``).

  For scale s (prediction at 1/2^(s+1)): target = avg-pool(target_flow, 2^(s+1)) / 20 (units of
  20 full-resolution pixels, as the predictions), mask = max-pool([vis < 2]); per example the
  masked mean of ‖pred − target‖₂; averaged over the batch; weighted by ``scale_weights[s]`` and
  summed.

  Args:
    pyramid: list of ``[B, H/2^(s+1), W/2^(s+1), 2]`` predictions (FlowRegressionNet).
    target_flow: ``[B, H, W, 2]`` pixels. vis: int ``[B, H, W]``.
    scale_weights: one weight per pyramid level (at least ``len(pyramid)``).

  Returns:
    scalar float32.

  Raises:
    ValueError: fewer weights than levels (names ``loss.flow_scale_weights``).
  """
  if len(scale_weights) < len(pyramid):
    raise errors.ConfigError(f"loss.flow_scale_weights has {len(scale_weights)} entries for {len(pyramid)} "
                     "flow levels (flow_model.n_levels)")
  total = jnp.zeros((), jnp.float32)
  for s, pred in enumerate(pyramid):
    f = target_flow.shape[1] // pred.shape[1]
    tgt = flow_lib.block_mean(target_flow.astype(jnp.float32), f) / diaf_models.FLOW_SCALE
    # max-pool of the human mask [V < 2] = [min-pooled V < 2] (downsample_visibility).
    m = (flow_lib.downsample_visibility(vis, f) < flow_lib.BACKGROUND).astype(jnp.float32)
    err = jnp.sqrt(jnp.sum(jnp.square(pred - tgt), -1) + 1e-12)
    per_example = jnp.sum(err * m, (1, 2)) / jnp.maximum(jnp.sum(m, (1, 2)), 1.0)
    total = total + scale_weights[s] * jnp.mean(per_example)
  return total


def visibility_cross_entropy(logits, vis) -> jax.Array:
  """Mean softmax cross-entropy over all pixels, 3 classes (reference ``CrossEntropyLoss``). Scalar float32."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), vis))


def gan_generator_loss(fake_logits) -> jax.Array:
  """Non-saturating vanilla GAN generator loss, BCE(D(fake), 1) on logits (Eq. 4). Scalar float32."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))


def gan_discriminator_loss(real_logits, fake_logits) -> jax.Array:
  """½·[BCE(D(real), 1) + BCE(D(fake), 0)] on logits (Eq. 4; reference ``dcgan`` loss). Scalar float32."""
  real = jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
  fake = jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)))
  return 0.5 * (real + fake)


def _select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


class DIAFTrainer:
  """Builds the DIAF networks, optimisers and the pure step functions of the three phases.

  Args:
    config: the resolved ``hpt_jax/configs/deepfashion_diaf.py`` config.

  Raises:
    ValueError: ``config.dtype``, ``loss.perceptual_distance`` or phase steps invalid (names the
      field).
  """

  def __init__(self, config):
    self.config = config
    if config.dtype not in ("float32", "bfloat16"):
      raise errors.ConfigError(f"config.dtype={config.dtype!r}: expected 'float32' or 'bfloat16'")
    if config.loss.perceptual_distance not in ("l1", "l2"):
      raise errors.ConfigError(f"loss.perceptual_distance={config.loss.perceptual_distance!r}: expected 'l1' or 'l2'")
    for phase in PHASES:
      if config.phases[phase].total_steps <= 0:
        raise errors.ConfigError(f"phases.{phase}.total_steps={config.phases[phase].total_steps} must be > 0")
    dtype = jnp.dtype(config.dtype)
    self.models = diaf_models.build_models(config, dtype)
    self.vgg = VGG(arch=config.perceptual.network, taps=tuple(config.perceptual.taps), dtype=dtype)
    o, fo = config.optimizer, config.flow_optimizer
    flow_lr = optax.exponential_decay(fo.learning_rate, fo.decay_every_steps, fo.decay_factor, staircase=True)
    self.tx = {
        "flow": optax.chain(optax.add_decayed_weights(fo.weight_decay),
                            optax.adam(flow_lr, b1=fo.b1, b2=fo.b2)),
        "generator": optax.adam(o.learning_rate, b1=o.b1, b2=o.b2),
        "pixel_warp": optax.adam(o.learning_rate, b1=o.b1, b2=o.b2),
        "disc": optax.chain(optax.add_decayed_weights(o.d_weight_decay),
                            optax.adam(o.d_learning_rate, b1=o.b1, b2=o.b2)),
    }
    self.flow_lr = flow_lr

  # ------------------------------------------------------------------ init
  def init_network(self, name: str, rng: jax.Array, image_shape: tuple[int, int]):
    """``(params, batch_stats)`` of one network for images of ``image_shape`` (H, W), as NumPy arrays.

    Shapes come from ``jax.eval_shape`` of the Flax ``init``; values are drawn on the host with
    NumPy seeded from ``rng``: conv kernels He-normal with fan-in kh·kw·C_in (the reference's
    Kaiming init, PyTorch ``kaiming_normal_``), biases 0, batch-norm scale 1 / offset 0, running
    mean 0 / variance 1. (A jitted Flax init of these nets took 30–40 s of XLA:CPU compilation,
    mostly the threefry key splitting; the host draw takes milliseconds.)

    Args:
      name: 'flow' | 'generator' | 'pixel_warp' | 'disc'.
      rng: a concrete PRNG key (raw uint32 [2] or typed); not traceable.
      image_shape: (H, W).
    """
    abstract = diaf_models.abstract_variables(self.models, name, image_shape)
    key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    gen = np.random.default_rng(np.asarray(key, np.uint32).reshape(-1).tolist() + [sorted(self.models).index(name)])

    def draw(path, x):
      leaf = path[-1].key
      if leaf == "kernel":
        fan_in = int(np.prod(x.shape[:-1]))
        return (gen.standard_normal(x.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))).astype(x.dtype)
      if leaf in ("bias", "mean"):
        return np.zeros(x.shape, x.dtype)
      if leaf in ("scale", "var"):
        return np.ones(x.shape, x.dtype)
      raise ValueError(f"no initialiser for parameter {jax.tree_util.keystr(path)} of {name}")

    variables = jax.tree_util.tree_map_with_path(draw, abstract)
    return variables["params"], variables["batch_stats"]

  def init_state(self, rng: jax.Array, phase: str, image_shape: tuple[int, int]) -> PhaseState:
    """Fresh :class:`PhaseState` of ``phase`` (networks ``TRAINED[phase]``, optimiser states).

    Call it outside ``jit`` (parameters are drawn on the host, :meth:`init_network`) and
    ``jax.device_put`` the result with the replicated sharding.

    Raises:
      ValueError: unknown phase.
    """
    if phase not in PHASES:
      raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    params, stats, opt = {}, {}, {}
    keys = jax.random.split(rng, len(TRAINED[phase]) + 1)
    for key, name in zip(keys, TRAINED[phase]):
      params[name], stats[name] = self.init_network(name, key, image_shape)
      opt[name] = jax.device_get(jax.jit(self.tx[name].init)(params[name]))
    return PhaseState(step=np.zeros((), np.int32), params=params, batch_stats=stats, opt_state=opt,
                      rng=np.asarray(keys[-1]))

  # --------------------------------------------------------------- forward
  def _apply(self, name, params, stats, *args, train: bool):
    """Runs network ``name``; returns ``(out, new_batch_stats)`` (stats unchanged when not training)."""
    variables = {"params": params, "batch_stats": stats}
    if train:
      out, mutated = self.models[name].apply(variables, *args, train=True, mutable=["batch_stats"])
      return out, mutated["batch_stats"]
    return self.models[name].apply(variables, *args, train=False), stats

  def predict_flow(self, flow_vars, batch) -> tuple[jax.Array, jax.Array]:
    """Frozen flow module on a batch (:func:`hpt_jax.models.diaf.predict_flow`): ``(flow·[V<2]
    [B,H,W,2] without gradient, V = argmax int32 [B,H,W])``."""
    flow, vis, _ = diaf_models.predict_flow(self.models["flow"], flow_vars, batch["source_pose"],
                                            batch["target_pose"])
    return jax.lax.stop_gradient(flow), vis

  def warp_source(self, source_image, flow, vis) -> jax.Array:
    """:func:`hpt_jax.models.diaf.warp_source`."""
    return diaf_models.warp_source(source_image, flow, vis)

  def generate(self, frozen, trained, batch) -> dict[str, jax.Array]:
    """:func:`hpt_jax.models.diaf.generate` with ``frozen`` and ``trained`` merged
    (``{network: {'params', 'batch_stats'}}`` each)."""
    return diaf_models.generate(self.models, {**frozen, **trained}, batch)

  def _perceptual(self, vgg_params, pred, target_features):
    feats = self.vgg.apply({"params": vgg_params}, pred)
    w = self.config.loss
    total = jnp.zeros((), jnp.float32)
    for name, f in feats.items():
      diff = f.astype(jnp.float32) - jax.lax.stop_gradient(target_features[name]).astype(jnp.float32)
      total = total + (jnp.mean(jnp.abs(diff)) if w.perceptual_distance == "l1" else jnp.mean(jnp.square(diff)))
    return w.perceptual_layer_weight * total

  # ------------------------------------------------------------------ steps
  def flow_step(self, state: PhaseState, batch) -> tuple[PhaseState, dict]:
    """One update of the flow module (phase 1). Pure; jit with ``donate_argnums=0``.

    Args:
      state: flow :class:`PhaseState`.
      batch: ``source_pose``/``target_pose`` [B,H,W,18], ``flow`` [B,H,W,2], ``visibility`` [B,H,W].

    Returns:
      ``(new_state, metrics)``: ``flow/epe_loss`` (multi-scale, units of 20 px), ``flow/vis_ce``,
      ``flow/total``, ``flow/epe`` and ``flow/epe_zero_flow`` (full-resolution pixels on human
      pixels, batch mean), ``flow/vis_accuracy``, ``lr``, ``grad_norm/flow``.
    """
    w = self.config.loss
    tgt, vis = batch["flow"], batch["visibility"]

    def loss_fn(params):
      out, stats = self._apply("flow", params, state.batch_stats["flow"], batch["source_pose"],
                               batch["target_pose"], train=True)
      epe_loss = multiscale_flow_loss(out["flow_pyramid"], tgt, vis, tuple(w.flow_scale_weights))
      ce = visibility_cross_entropy(out["vis_logits"], vis)
      total = w.flow_epe * epe_loss + w.visibility * ce
      return total, (out, stats, {"flow/epe_loss": epe_loss, "flow/vis_ce": ce, "flow/total": total})

    grads, (out, stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.params["flow"])
    updates, opt = self.tx["flow"].update(grads, state.opt_state["flow"], state.params["flow"])
    params = optax.apply_updates(state.params["flow"], updates)
    metrics["flow/epe"] = jnp.mean(flow_lib.endpoint_error(out["flow"], tgt, vis))
    metrics["flow/epe_zero_flow"] = jnp.mean(flow_lib.endpoint_error(jnp.zeros_like(tgt), tgt, vis))
    metrics["flow/vis_accuracy"] = jnp.mean((jnp.argmax(out["vis_logits"], -1) == vis).astype(jnp.float32))
    metrics["lr"] = self.flow_lr(state.step)
    metrics["grad_norm/flow"] = optim.global_norm(grads)
    new_state = state.replace(step=state.step + 1, params={"flow": params}, batch_stats={"flow": stats},
                              opt_state={"flow": opt})
    return new_state, metrics

  def _adversarial_step(self, state, batch, vgg_params, net, forward, gan_on):
    """D update then ``net`` update on L1 + perceptual + GAN of the image of ``forward``.

    ``forward(params) → (image [B,H,W,3], (new batch_stats, extra metrics))``; ``gan_on`` is a
    bool scalar: when False the discriminator is left unchanged and the GAN term weighs 0.
    Returns ``(new_state, metrics, image)``.
    """
    w = self.config.loss
    target = batch["target_image"]
    target_features = jax.lax.stop_gradient(self.vgg.apply({"params": vgg_params}, target))
    fake, vjp_fn, (net_stats, extra) = jax.vjp(forward, state.params[net], has_aux=True)

    # (1) Discriminator, on the detached fake; kept unchanged before the GAN starts.
    d_params, d_stats, d_opt = state.params["disc"], state.batch_stats["disc"], state.opt_state["disc"]
    fake_d = jax.lax.stop_gradient(fake)

    def d_loss_fn(p):
      real_logits, s1 = self._apply("disc", p, d_stats, batch["source_image"], batch["target_pose"], target,
                                    train=True)
      fake_logits, s2 = self._apply("disc", p, s1, batch["source_image"], batch["target_pose"], fake_d,
                                    train=True)
      return gan_discriminator_loss(real_logits, fake_logits), s2

    (d_loss, new_d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    updates, new_d_opt = self.tx["disc"].update(d_grads, d_opt, d_params)
    new_d_params = optax.apply_updates(d_params, updates)
    d_params = _select(gan_on, new_d_params, d_params)
    d_opt = _select(gan_on, new_d_opt, d_opt)
    d_stats = _select(gan_on, new_d_stats, d_stats)

    # (2) The trained network, through the updated discriminator.
    def g_loss_fn(image):
      l1 = losses.l1(image, target)
      per = self._perceptual(vgg_params, image, target_features)
      logits, _ = self._apply("disc", d_params, d_stats, batch["source_image"], batch["target_pose"], image,
                              train=True)
      gan = gan_generator_loss(logits)
      total = w.l1 * l1 + w.perceptual * per + w.gan * gan_on.astype(jnp.float32) * gan
      return total, {"l1": l1, "perceptual": per, "gan": gan, "total": total}

    dfake, aux = jax.grad(g_loss_fn, has_aux=True)(fake)
    (grads,) = vjp_fn(dfake)
    updates, opt = self.tx[net].update(grads, state.opt_state[net], state.params[net])
    params = optax.apply_updates(state.params[net], updates)
    metrics = {f"{net}/{k}": v for k, v in aux.items()}
    metrics.update(extra)
    metrics["disc/loss"] = d_loss
    metrics["grad_norm/" + net] = optim.global_norm(grads)
    metrics["grad_norm/disc"] = optim.global_norm(d_grads)
    metrics["gan_on"] = gan_on.astype(jnp.float32)
    new_state = state.replace(
        step=state.step + 1,
        params={net: params, "disc": d_params},
        batch_stats={net: net_stats, "disc": d_stats},
        opt_state={net: opt, "disc": d_opt})
    return new_state, metrics, fake

  def generator_step(self, state: PhaseState, batch, frozen, vgg_params) -> tuple[PhaseState, dict]:
    """One iteration of phase 2: D update (from ``gan_start_step``), then the generator.

    Args:
      state: generator :class:`PhaseState` (``generator`` and ``disc``).
      batch: ``source_image``/``target_image`` [B,H,W,3] in [-1, 1], ``source_pose``/``target_pose``
        [B,H,W,18] disks (flow targets are ignored: the frozen flow module predicts F and V).
      frozen: ``{'flow': {'params', 'batch_stats'}}``.
      vgg_params: perceptual-network parameters.

    Returns:
      ``(new_state, metrics)``: ``generator/{l1,perceptual,gan,total}``, ``disc/loss``, gradient
      norms, ``gan_on``.
    """
    flow, vis = self.predict_flow(frozen["flow"], batch)
    gan_on = state.step >= self.config.phases.generator.gan_start_step

    def forward(params):
      image, stats = self._apply("generator", params, state.batch_stats["generator"], batch["source_image"],
                                 batch["target_pose"], flow, vis, train=True)
      return image, (stats, {})

    new_state, metrics, _ = self._adversarial_step(state, batch, vgg_params, "generator", forward, gan_on)
    return new_state, metrics

  def pixel_warp_step(self, state: PhaseState, batch, frozen, vgg_params) -> tuple[PhaseState, dict]:
    """One iteration of phase 3: D update, then the pixel-warp net; flow module and generator frozen.

    Args:
      state: pixel-warp :class:`PhaseState` (``pixel_warp`` and ``disc``).
      batch: as :meth:`generator_step`.
      frozen: ``{'flow': …, 'generator': …}`` each ``{'params', 'batch_stats'}``.
      vgg_params: perceptual-network parameters.

    Returns:
      ``(new_state, metrics)``: ``pixel_warp/{l1,perceptual,gan,total}`` of the fused output,
      ``pixel_warp/mask_mean``, ``disc/loss``, gradient norms.
    """
    flow, vis = self.predict_flow(frozen["flow"], batch)
    # The frozen generator runs as at inference: running averages, or with model.bn_mode='reference'
    # this batch's statistics (the reference keeps netG in train mode under no_grad).
    generated = diaf_models.apply_frozen(self.models["generator"], frozen["generator"], batch["source_image"],
                                         batch["target_pose"], flow, vis)
    generated = jax.lax.stop_gradient(generated)
    warped = self.warp_source(batch["source_image"], flow, vis)

    def forward(params):
      z, stats = self._apply("pixel_warp", params, state.batch_stats["pixel_warp"], generated, warped, flow,
                             vis, train=True)
      return z * warped + (1 - z) * generated, (stats, {"pixel_warp/mask_mean": jnp.mean(z)})

    new_state, metrics, _ = self._adversarial_step(state, batch, vgg_params, "pixel_warp", forward,
                                                   jnp.asarray(True))
    return new_state, metrics


# ---------------------------------------------------------------------------------- driver
def _eval_batches(examples, config, mesh):
  """Yields ``(sharded model inputs, host batch, n_valid)`` over ``examples`` in order, every batch
  padded to ``config.batch_size`` (one compiled shape for evaluation and samples)."""
  from hpt_jax.input_pipeline import diaf_pipeline
  bs = config.batch_size
  ds = diaf_pipeline.create_diaf_dataset(examples, config, config.eval_data, batch_size=bs, seed=config.seed,
                                         train=False, drop_remainder=False)
  for batch in ds:
    n = len(batch["pair_index"])
    batch = {k: parallel.pad_to(v, bs) for k, v in batch.items()}
    yield parallel.shard_batch(diaf_pipeline.model_inputs(batch), mesh), batch, n


def evaluate_images(generate_fn, frozen, trained, examples, config, mesh, key: str) -> dict[str, float]:
  """Mean L1 (images in [-1, 1]) over ``examples`` of ``generate()[key]``, of the warped source and
  of the source copied unchanged, each against the target. Returns ``{'eval_l1/<name>': value}``."""
  sums, n_total = {}, 0
  for inputs, host, n in _eval_batches(examples, config, mesh):
    out = jax.device_get(generate_fn(frozen, trained, inputs))
    target = host["target_image"][:n]
    for name, image in ((key, out[key]), ("warped_source", out["warped"]), ("source_copy", host["source_image"])):
      sums[f"eval_l1/{name}"] = sums.get(f"eval_l1/{name}", 0.0) + float(np.sum(np.mean(np.abs(image[:n] - target), (1, 2, 3))))
    n_total += n
  return {k: v / max(n_total, 1) for k, v in sums.items()}


def sample_columns(phase: str, out: dict, batch: dict) -> tuple[list[np.ndarray], str]:
  """Sample-grid columns of a phase and their caption (rows = eval pairs)."""
  rows = min(4, len(batch["source_image"]))
  out = {k: v[:rows] for k, v in jax.device_get(out).items()}
  host = {k: v[:rows] for k, v in jax.device_get(batch).items()}
  pose_rgb = image_io.pose_to_rgb(host["target_pose"])
  if phase == "flow":
    m = max(float(np.abs(host["flow"]).max()), 1.0)
    cols = [host["source_image"], pose_rgb, flow_lib.flow_to_rgb(host["flow"], m),
            flow_lib.flow_to_rgb(out["flow"], m), flow_lib.visibility_to_rgb(host["visibility"]),
            flow_lib.visibility_to_rgb(out["vis"]), out["warped"], host["target_image"]]
    return cols, "source|pose|flow target|flow pred|vis target|vis pred|warped|target"
  if phase == "generator":
    return ([host["source_image"], pose_rgb, out["warped"], out["generated"], host["target_image"]],
            "source|pose|warped|generated|target")
  mask = np.repeat(out["mask"] * 2 - 1, 3, -1)
  return ([host["source_image"], pose_rgb, out["warped"], out["generated"], mask, out["final"],
           host["target_image"]], "source|pose|warped|generated|mask z|final|target")


def _variables(state: PhaseState) -> dict:
  return {k: {"params": state.params[k], "batch_stats": state.batch_stats[k]} for k in state.params}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs the three DIAF phases in order, resuming from ``workdir``.

  Workdir: ``checkpoints/{flow,generator,pixel_warp}/<step>/`` (Orbax: phase state + data-iterator
  state), TensorBoard events, ``samples/<phase>_step_<N>.png``, ``config.json``,
  ``flow_eval.json`` (EPE vs zero flow on ``eval_data``) and ``summary.json`` (``stages``: each
  phase's final losses, steps and time, written by the step loop; ``eval``: the flow EPE and each
  image phase's metrics on ``eval_data``). A phase whose latest checkpoint is at its ``total_steps``
  is skipped (its final weights are restored for the next phases); an unfinished phase resumes
  from its latest checkpoint.

  Returns:
    the contents of ``summary.json`` (:func:`hpt_jax.runs.read_summary`).

  Raises:
    ValueError: an invalid config field (named).
    hpt_jax.input_pipeline.patn_format.DataError: bad data (names the file and row).
    hpt_jax.weights.WeightsNotFoundError: perceptual weights missing.
    hpt_jax.train.loop.NonFiniteLossError: a loss became NaN/Inf (names it and the step).
  """
  from hpt_jax.input_pipeline import diaf_pipeline
  from hpt_jax.train import loop

  diaf_pipeline.validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  rep = parallel.replicated(mesh)
  local_batch = parallel.per_process_batch_size(config.batch_size, mesh)
  image_size = tuple(config.data.image_size)
  if tuple(config.eval_data.image_size) != image_size:
    raise errors.ConfigError(f"eval_data.image_size={tuple(config.eval_data.image_size)} must equal data.image_size={image_size}")

  train_examples = diaf_pipeline.load_examples(config.data, logger=logging.info)
  eval_examples = diaf_pipeline.load_examples(config.eval_data, logger=logging.info)
  trainer = DIAFTrainer(config)
  from hpt_jax import weights
  vgg_params = jax.device_put(weights.load_perceptual_params(config), rep)

  writer = loop.create_writer(workdir)
  runs.write_config_json(workdir, config)
  evals = runs.read_summary(workdir).get("eval", {})

  # Samples: the first eval batch (same shape as evaluation, so one compiled generate per phase).
  sample_batch = next(_eval_batches(eval_examples, config, mesh))[0]
  generate_fn = jax.jit(trainer.generate)

  frozen: dict[str, Any] = {}
  disc_from_generator = None
  global_step = 0   # TensorBoard x-axis across phases
  try:
    for phase in PHASES:
      total = config.phases[phase].total_steps
      state = trainer.init_state(jax.random.fold_in(jax.random.PRNGKey(config.seed), PHASES.index(phase)), phase,
                                 image_size)
      if phase == "pixel_warp":   # the discriminator continues from the generator phase
        state = state.replace(params={**state.params, "disc": disc_from_generator.params["disc"]},
                              batch_stats={**state.batch_stats, "disc": disc_from_generator.batch_stats["disc"]},
                              opt_state={**state.opt_state, "disc": disc_from_generator.opt_state["disc"]})
      state = jax.device_put(state, rep)
      ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", phase), config.keep_checkpoints)
      try:
        latest = ckpt.latest_step()
        if latest is not None and latest >= total:
          state = ckpt.restore(state)
          logging.info("phase %s: complete at step %d in %s, skipped", phase, int(state.step), ckpt.directory)
        else:
          dataset = diaf_pipeline.create_diaf_dataset(
              train_examples, config, config.data, batch_size=local_batch, seed=config.seed + PHASES.index(phase),
              train=True, shard_index=jax.process_index(), shard_count=jax.process_count())
          train_iter = iter(dataset)
          if latest is not None:
            state = ckpt.restore(state, train_iter)
            logging.info("phase %s: resumed from %s at step %d", phase, ckpt.directory, int(state.step))
          logging.info("phase %s: %s parameters, %d steps", phase,
                       {k: f"{runs.count_params(v) / 1e6:.3f}M" for k, v in state.params.items()}, total)
          state, _ = _run_phase(trainer, phase, state, train_iter, frozen, vgg_params, config, mesh, rep,
                                ckpt, writer, workdir, generate_fn, sample_batch, global_step)
      finally:
        ckpt.close()
      global_step += total
      frozen_vars = _variables(state)
      if phase == "flow":
        frozen["flow"] = frozen_vars["flow"]
        if "flow" not in evals:
          from hpt_jax import evaluation, inference
          result = evaluation.flow_epe(inference.DIAFModel(config, {"flow": frozen["flow"]}, mesh=mesh),
                                       eval_examples, config)
          evals["flow"] = result
          with open(os.path.join(workdir, "flow_eval.json"), "w") as f:
            json.dump(result, f, indent=2)
          writer.write_scalars(global_step, {f"flow_eval/{k}": v for k, v in result.items()
                                             if isinstance(v, (int, float))})
          logging.info("flow module on %s (%d pairs): EPE %.3f px vs zero flow %.3f px; visibility accuracy "
                       "%.3f (human pixels %.3f)", config.eval_data.pairs, result["pairs"], result["epe"],
                       result["epe_zero_flow"], result["vis_accuracy"], result["vis_accuracy_human"])
      elif phase == "generator":
        frozen["generator"] = frozen_vars["generator"]
        disc_from_generator = state
        if "generator" not in evals:
          evals["generator"] = evaluate_images(
              generate_fn, {"flow": frozen["flow"]}, _variables(state), eval_examples, config, mesh, "generated")
          logging.info("generator on eval pairs: %s", evals["generator"])
      else:
        if "pixel_warp" not in evals:
          evals["pixel_warp"] = evaluate_images(
              generate_fn, frozen, _variables(state), eval_examples, config, mesh, "final")
          logging.info("pixel warping on eval pairs: %s", evals["pixel_warp"])
      runs.update_summary(workdir, "eval", evals)
  finally:
    writer.close()
  return runs.read_summary(workdir)


def _run_phase(trainer, phase, state, train_iter, frozen, vgg_params, config, mesh, rep, ckpt, writer, workdir,
               generate_fn, sample_batch, step_offset):
  """One phase on the shared :func:`hpt_jax.train.loop.run_steps`; returns ``(state, last step's
  scalars)`` (metric names without a ``/`` get the ``<phase>/`` prefix)."""
  from hpt_jax.input_pipeline import diaf_pipeline
  from hpt_jax.train import loop

  total = config.phases[phase].total_steps
  if phase == "flow":
    step_fn = jax.jit(trainer.flow_step, donate_argnums=0, out_shardings=(rep, rep))
    call = lambda s, b: step_fn(s, b)  # noqa: E731
  else:
    fn = trainer.generator_step if phase == "generator" else trainer.pixel_warp_step
    step_fn = jax.jit(fn, donate_argnums=0, out_shardings=(rep, rep))
    call = lambda s, b: step_fn(s, b, frozen, vgg_params)  # noqa: E731

  def step_and_tag(s, b):
    state, metrics = call(s, b)
    return state, {(k if "/" in k else f"{phase}/{k}"): v for k, v in metrics.items()}

  def sample_fn(step, state):
    out = generate_fn(frozen, _variables(state), sample_batch)
    cols, caption = sample_columns(phase, out, sample_batch)
    grid = image_io.image_grid(cols)
    image_io.save_png(os.path.join(workdir, "samples", f"{phase}_step_{step}.png"), grid)
    return {f"samples/{phase}/{caption}": grid}

  return loop.run_steps(
      state, step_and_tag, lambda: parallel.shard_batch(diaf_pipeline.model_inputs(next(train_iter)), mesh),
      total_steps=total, ckpt=ckpt, data_iter=train_iter, writer=writer, log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint_every_steps, sample_every=config.sample_every_steps,
      sample_fn=sample_fn, step_offset=step_offset)


# ---------------------------------------------------------------------------------- benchmark
def synthetic_batch(batch_size: int, image_size, seed: int = 0) -> dict:
  """Random DIAF host batch with the step's keys: images in [-1, 1], binary-disk poses, a flow of a
  few pixels and random visibility classes."""
  rng = np.random.default_rng(seed)
  h, w = image_size
  return {
      "source_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "target_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      "source_pose": (rng.random((batch_size, h, w, 18)) < 0.02).astype(np.float32),
      "target_pose": (rng.random((batch_size, h, w, 18)) < 0.02).astype(np.float32),
      "flow": rng.normal(0, 4, (batch_size, h, w, 2)).astype(np.float32),
      "visibility": rng.integers(0, 3, (batch_size, h, w)).astype(np.int32),
  }


def benchmark_workload(config, level: int | None = None, phase: str | None = None) -> dict:
  """What ``launch/benchmark.py`` times for DIAF: one step of ``phase`` (default ``generator``: a
  D update and a generator update with the flow module frozen, the costliest phase per step;
  ``flow``: one flow-module update; ``pixel_warp``: D + pixel-warp net with flow and generator
  frozen). Keys as :func:`hpt_jax.train.drn.benchmark_workload`; ``init`` draws on the host
  (``traceable_init`` False), frozen networks are freshly initialised.

  Raises:
    ValueError: unknown phase (names the flag).
  """
  del level
  phase = phase or "generator"
  if phase not in PHASES:
    raise errors.ConfigError(f"--phase={phase!r}: expected one of {PHASES}")
  trainer = DIAFTrainer(config)
  image_size = tuple(int(s) for s in config.data.image_size)
  root = jax.random.PRNGKey(config.seed)
  frozen = {}
  for i, name in enumerate(FROZEN[phase]):
    params, stats = trainer.init_network(name, jax.random.fold_in(root, 100 + i), image_size)
    frozen[name] = {"params": params, "batch_stats": stats}
  if phase == "flow":
    step = lambda state, batch, extra: trainer.flow_step(state, batch)  # noqa: E731
  else:
    fn = trainer.generator_step if phase == "generator" else trainer.pixel_warp_step
    step = lambda state, batch, extra: fn(state, batch, extra["frozen"], extra["vgg"])  # noqa: E731
  return {"trainer": trainer, "image_size": image_size,
          "init": lambda rng: trainer.init_state(rng, phase, image_size), "traceable_init": False,
          "batch": lambda b: synthetic_batch(b, image_size, seed=config.seed),
          "step": step, "extra": lambda vgg_params: {"frozen": frozen, "vgg": vgg_params},
          "record": {"phase": phase, "frozen": list(FROZEN[phase])}}

"""Optimisers and learning-rate schedules shared by the trainers.

The learning rate is applied by the train step (``params += lr(step) · update``) rather than
inside the optax chain, because in a 1-1-3 cycle one network takes several updates per cycle
while the schedule is defined per cycle (DRN §V: "kept fixed for the first 10 [epochs] before
linearly decaying to 0").

DRN: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network", IEEE Transactions
on Image Processing 2021, arXiv:2005.12494.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hpt_jax import errors


def hold_steps(hold_fraction: float, total_steps: int) -> int:
  """Steps at the constant rate: ``round(hold_fraction · total_steps)``.

  The hold is a fraction of the run rather than a step count so that shortening a run with
  ``--config.total_steps=N`` alone keeps the schedule's shape (DRN §V: 10K of 40K cycles, 0.25).

  Raises:
    hpt_jax.errors.ConfigError: ``optimizer.hold_fraction`` outside [0, 1].
  """
  if not 0.0 <= hold_fraction <= 1.0:
    raise errors.ConfigError(f"optimizer.hold_fraction={hold_fraction} must lie in [0, 1] "
                             "(the fraction of total_steps at the constant rate)")
  return int(round(hold_fraction * total_steps))


def hold_then_linear_decay(base_lr: float, hold_steps: int, total_steps: int):
  """Returns ``lr(step)``: ``base_lr`` for ``step < hold_steps``, then linear to 0 at ``total_steps``.

  Args:
    base_lr: learning rate during the hold (DRN: 1e-4).
    hold_steps: cycles at the constant rate (DRN: 10K of 40K cycles).
    total_steps: the cycle at which the rate reaches 0.

  Returns:
    A jittable function int step → float32 learning rate (clipped at 0 after ``total_steps``).

  Raises:
    ValueError: ``hold_steps`` outside [0, total_steps] or a negative rate.
  """
  if not 0 <= hold_steps <= total_steps:
    raise errors.ConfigError(f"optimizer.hold_steps={hold_steps} must lie in [0, total_steps={total_steps}]")
  if base_lr < 0:
    raise errors.ConfigError(f"optimizer.learning_rate={base_lr} must be >= 0")
  decay = max(total_steps - hold_steps, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    frac = jnp.clip((step - hold_steps) / decay, 0.0, 1.0)
    return jnp.float32(base_lr) * (1.0 - frac)

  return schedule


def radam_decoupled(b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
  """RAdam direction with decoupled weight decay, *without* the learning rate.

  ``update = radam_direction(g) + weight_decay · p``; the step applies ``p ← p − lr · update``, i.e.
  the reference ``RAdam`` (``models/radam.py``: ``p -= wd·lr·p``, SGD-momentum fallback while the
  variance rectification term is undefined, N_sma < 5) up to its bias-corrected fallback.
  """
  return optax.chain(
      optax.scale_by_radam(b1=b1, b2=b2, eps=eps, threshold=5.0),
      optax.add_decayed_weights(weight_decay),
  )


def adam_decoupled(b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
  """Adam direction with weight decay added to the update, without the learning rate (HPN, DIAF)."""
  return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.add_decayed_weights(weight_decay))


def global_norm(tree) -> jax.Array:
  """√(Σ x²) over every leaf of ``tree``, accumulated in float32 (the gradient-norm metrics)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def apply_updates(params, updates, lr: jax.Array):
  """``params − lr · updates`` leaf-wise, keeping each parameter's dtype."""
  return jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), params, updates)


def adam_l2(b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
  """Adam with *coupled* L2 weight decay, as ``torch.optim.Adam(weight_decay=wd)``.

  ``wd · param`` is added to the gradient before the moment estimates (not decoupled as AdamW).
  HPN (Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training",
  arXiv:2008.11898, 2020; §3.4) says "Adam with a weight decay of 5e-4" — PyTorch's Adam semantics, the
  usual reading. The learning rate is applied by :func:`apply_updates`.
  """
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=b1, b2=b2, eps=eps))

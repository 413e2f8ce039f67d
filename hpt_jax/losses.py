"""Loss terms of the DRN objective (DRN paper ``003`` §IV-B, Eq. 5–8) and LSGAN.

Every loss is reduced in float32 whatever the computation dtype of its inputs. Images are NHWC in
[-1, 1]; features are dicts ``tap name → [B, h, w, C]`` from :class:`hpt_jax.models.vgg.VGG`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp


def l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Pixel-wise L1, L_recon: mean |prediction − target| over all elements (PyTorch ``L1Loss``). Scalar float32."""
  return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def perceptual(pred_features: Mapping[str, jax.Array], target_features: Mapping[str, jax.Array]) -> jax.Array:
  """Perceptual loss, DRN Eq. (6): Σ_l (1/CHW)·‖φ_l(I_t) − φ_l(Ĩ)‖₁, averaged over the batch.

  The target features are not differentiated (``stop_gradient``), as in PATN's ``L1_plus_perceptualLoss``.

  Args:
    pred_features / target_features: same keys, each [B, h, w, C].

  Returns:
    Scalar float32: the sum over layers of the mean absolute feature difference.
  """
  total = jnp.zeros((), jnp.float32)
  for name, pred in pred_features.items():
    target = jax.lax.stop_gradient(target_features[name])
    total = total + jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))
  return total


def gram_matrix(features: jax.Array) -> jax.Array:
  """Gram matrix, DRN Eq. (8): G_ij = (1/CHW) Σ_hw F_ihw F_jhw.

  Args:
    features: [B, h, w, C].

  Returns:
    [B, C, C] float32.
  """
  b, h, w, c = features.shape
  f = features.astype(jnp.float32).reshape(b, h * w, c)
  return jnp.einsum("bpi,bpj->bij", f, f) / (c * h * w)


def gram_style(pred_features: Mapping[str, jax.Array], target_features: Mapping[str, jax.Array]) -> jax.Array:
  """Gram-matrix style loss L_sty (DRN Eq. 8, after Johnson et al. [15]).

  Σ_l ‖G(φ_l(I_t)) − G(φ_l(Ĩ_t))‖²_F with G already normalised by 1/(C·h·w), averaged over the
  batch. Eq. (8) as printed multiplies by a further 1/CHW, which would shrink the term by ~10⁻⁶
  and make λ_sty = 5 meaningless; we follow the cited definition of [15] and say so here.

  Returns:
    Scalar float32.
  """
  total = jnp.zeros((), jnp.float32)
  for name, pred in pred_features.items():
    diff = gram_matrix(pred) - jax.lax.stop_gradient(gram_matrix(target_features[name]))
    total = total + jnp.mean(jnp.sum(jnp.square(diff), axis=(1, 2)))
  return total


def lsgan_generator(fake_scores: jax.Array) -> jax.Array:
  """LSGAN generator term (Mao et al.; DRN §IV-B "we use the LSGAN variant"): mean (D(fake) − 1)². Scalar float32."""
  return jnp.mean(jnp.square(fake_scores.astype(jnp.float32) - 1.0))


def lsgan_discriminator(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """LSGAN discriminator loss ½·[mean (D(real) − 1)² + mean D(fake)²]. Scalar float32.

  The ½ is the reference code's (``RATE_NET.backward_D``: ``(loss_real + loss_fake) * 0.5``).
  """
  real = jnp.mean(jnp.square(real_scores.astype(jnp.float32) - 1.0))
  fake = jnp.mean(jnp.square(fake_scores.astype(jnp.float32)))
  return 0.5 * (real + fake)

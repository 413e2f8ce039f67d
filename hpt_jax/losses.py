"""Loss terms of the DRN objective (DRN §IV-B, Eq. 5–8) and LSGAN.

DRN: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network", IEEE Transactions
on Image Processing 2021, arXiv:2005.12494.

Every loss is reduced in float32 whatever the computation dtype of its inputs. Images are NHWC in
[-1, 1]; features are dicts ``tap name → [B, h, w, C]`` from :class:`hpt_jax.models.vgg.VGG`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from hpt_jax import errors


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


STYLE_NORMALIZATIONS = ("entries", "frobenius", "chw")


def gram_style(pred_features: Mapping[str, jax.Array], target_features: Mapping[str, jax.Array],
               normalization: str = "entries") -> jax.Array:
  """Gram-matrix style loss L_sty (DRN Eq. 8, after Johnson et al. [15]), summed over layers.

  With ΔG = G(φ_l(Ĩ_t)) − G(φ_l(I_t)) (G normalised by 1/(C·h·w), :func:`gram_matrix`), per layer:

  * ``'entries'`` (default): mean of ΔG² over the C² entries — the MSE criterion of Johnson et
    al.'s released code, whose default style weight (5) is DRN's λ_sty;
  * ``'frobenius'``: ‖ΔG‖²_F, the formula in Johnson et al.'s paper;
  * ``'chw'``: ‖ΔG‖²_F / (C·h·w), Eq. (8) as printed.

  Eq. (8) is ambiguous and the three differ by orders of magnitude. Measured on real DeepFashion
  images at 256×176 (ImageNet-normalised VGG-16 relu1_1…relu4_1, target vs. a blurred copy):
  'frobenius' ≈ 50 (×λ_sty = 250, ten times the perceptual term, and it swamped the first CPU
  runs), 'entries' ≈ 1e-3, 'chw' ≈ 1e-4 and shrinking with resolution. 'entries' is the default
  because it is resolution-independent and is what the code the paper cites computes; with
  torchvision-normalised features it makes a small term, which GFLA/PISE compensate with
  λ_sty = 500 — raise ``loss.style`` if you want the term to matter.

  Args:
    pred_features / target_features: same keys, each [B, h, w, C]; targets are not differentiated.
    normalization: one of ``STYLE_NORMALIZATIONS``.

  Returns:
    Scalar float32 (batch mean).

  Raises:
    ValueError: unknown ``normalization`` (names ``loss.style_normalization``).
  """
  if normalization not in STYLE_NORMALIZATIONS:
    raise errors.ConfigError(f"loss.style_normalization={normalization!r}: expected one of {STYLE_NORMALIZATIONS}")
  total = jnp.zeros((), jnp.float32)
  for name, pred in pred_features.items():
    _, h, w, c = pred.shape
    diff = gram_matrix(pred) - jax.lax.stop_gradient(gram_matrix(target_features[name]))
    frobenius = jnp.sum(jnp.square(diff), axis=(1, 2))
    scale = {"entries": c * c, "frobenius": 1, "chw": c * h * w}[normalization]
    total = total + jnp.mean(frobenius) / scale
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

"""DRN's face enhancing module: a detail replenishing generator on 64×64 face crops, and the Eq. 2 blend.

Paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE TIP 2021, arXiv:2005.12494, §IV-A (the regional face module, Eq. 2) and §IV-B/§V (the face
is trained separately with the Eq. 7 losses, 64×64 bicubic crops). The paper gives no layer
sizes for the face module and no reference code for it was released with RATE-Net
(Lotayou/Pose-Transfer @ 164c91b, branch rate_net, has none); what follows is our design:

* :class:`FaceGenerator` G_F — the detail replenishing module of the body
  (:class:`hpt_jax.models.drn.DetailReplenishingModule`: style encoder → 128-d style code z_s →
  3-layer MLP → AdaIN residual blocks → up-sampling decoder, Eq. 3–4) applied to the face:
  the **style code comes from the source face crop**, and the content input, which for the body is
  the pose branch's guidance map F_t, is here the target landmark sketch H_F through a
  :class:`ContentEncoder` (faces have no pose branch). Its output is the face crop Ĩ_F itself
  (tanh), not a residual. The content encoder follows FUNIT's (Liu et al., "Few-Shot Unsupervised
  Image-to-Image Translation", ICCV 2019, arXiv:1905.01723): reflect-pad conv7 → IN → act,
  ``n_downsampling`` × [conv4 stride 2 → IN → act] doubling the width, ``n_content_resblocks``
  residual blocks [conv3 → IN → act → conv3 → IN] + skip; [B, 64, 64, 1] →
  [B, 64/2^n, 64/2^n, nf·2^n], which the generator's AdaIN blocks and n up-samplings decode.
* D_A and D_S — :class:`hpt_jax.models.drn.ResnetDiscriminator` conditioned on the source face
  crop (appearance) and on H_F (shape), as the paper replaces P_t by H_F and I_s by the face patch.
* :func:`blend` — Eq. 2, Ĩ_t = (1 − M_F)(Ĩ_c + R_t) + M_F Ĩ_F with M_F = g(σ) * 1[B_F]: the
  generated crop is pasted into the target box B_F (:func:`paste`, bilinear), the box indicator is
  blurred with a discrete Gaussian (:func:`gaussian_blur`), and M_F is zero for a pair that is not
  a face pair (the blend is then the body output).

Arrays are NHWC float32; faces and crops in [-1, 1], sketches in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpt_jax import layers
from hpt_jax.models import drn

Dtype = Any
#: Side of the face crops (DRN §V), as :data:`hpt_jax.input_pipeline.faces.CROP_SIZE`.
CROP_SIZE = 64
#: The networks of the face module; the generator is the only one inference needs.
NETWORKS = ("face_generator", "disc_appearance", "disc_shape")
GENERATORS = ("face_generator",)


class ContentEncoder(nn.Module):
  """H_F → content features (module docstring): [B, S, S, C_in] → [B, S/2^n, S/2^n, nf·2^n]."""

  nf: int = 64
  n_downsampling: int = 2
  n_resblocks: int = 2
  activation: str = "leaky_relu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, sketch: jax.Array) -> jax.Array:
    act = layers.get_activation(self.activation)
    x = act(layers.instance_norm(layers.Conv(self.nf, 7, padding=3, dtype=self.dtype, name="conv_in")(
        sketch.astype(self.dtype))))
    nf = self.nf
    for i in range(self.n_downsampling):
      nf *= 2
      x = act(layers.instance_norm(layers.Conv(nf, 4, stride=2, padding=1, dtype=self.dtype, name=f"down_{i}")(x)))
    for r in range(self.n_resblocks):
      y = act(layers.instance_norm(layers.Conv(nf, 3, padding=1, dtype=self.dtype, name=f"res_{r}_conv1")(x)))
      y = layers.instance_norm(layers.Conv(nf, 3, padding=1, dtype=self.dtype, name=f"res_{r}_conv2")(y))
      x = x + y
    return x


class FaceGenerator(nn.Module):
  """G_F: (source face crop, target sketch H_F) → target face crop Ĩ_F (module docstring).

  Attributes:
    nf, n_downsampling, n_content_resblocks: the content encoder's width, stride-2 convolutions
      and residual blocks (its output has ``nf·2**n_downsampling`` channels).
    style_nf, style_dim, mlp_dim, n_adain_resblocks, activation: as
      :class:`hpt_jax.models.drn.DetailReplenishingModule`.
  """

  nf: int = 64
  n_downsampling: int = 2
  n_content_resblocks: int = 2
  style_nf: int = 64
  style_dim: int = 128
  mlp_dim: int = 256
  n_adain_resblocks: int = 2
  activation: str = "leaky_relu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_face: jax.Array, sketch: jax.Array) -> jax.Array:
    """source_face [B, S, S, 3] in [-1, 1], sketch [B, S, S, 1] in [0, 1] → Ĩ_F [B, S, S, 3] in
    [-1, 1] (float32); S divisible by ``2**n_downsampling`` and ≥ 16 (the style encoder's 4
    stride-2 convolutions)."""
    content = ContentEncoder(self.nf, self.n_downsampling, self.n_content_resblocks, self.activation, self.dtype,
                             name="content_encoder")(sketch)
    return drn.DetailReplenishingModule(self.nf * 2 ** self.n_downsampling, self.n_downsampling, self.style_nf,
                                        self.style_dim, self.mlp_dim, self.n_adain_resblocks, self.activation,
                                        self.dtype, name="detail")(source_face, content)


def build_models(model_config, dtype: Dtype = jnp.float32) -> dict[str, nn.Module]:
  """G_F, D_A and D_S from the face config's ``model`` block (fields ``nf, n_downsampling,
  n_content_resblocks, style_nf, style_dim, mlp_dim, n_adain_resblocks, activation, ndf,
  d_downsampling, d_blocks, d_dropout``)."""
  m = model_config
  disc = lambda: drn.ResnetDiscriminator(m.ndf, m.d_downsampling, m.d_blocks, m.activation, m.d_dropout, dtype)
  return {"face_generator": FaceGenerator(m.nf, m.n_downsampling, m.n_content_resblocks, m.style_nf, m.style_dim,
                                          m.mlp_dim, m.n_adain_resblocks, m.activation, dtype),
          "disc_appearance": disc(), "disc_shape": disc()}


def init_inputs(name: str, size: int = CROP_SIZE) -> tuple[jax.Array, ...]:
  """Zero inputs (batch 1) that initialise network ``name``: G_F (face, sketch), D_A (face, face),
  D_S (face, sketch); faces [1, S, S, 3], sketches [1, S, S, 1].

  Raises:
    ValueError: an unknown network name.
  """
  face = jnp.zeros((1, size, size, 3), jnp.float32)
  sketch = jnp.zeros((1, size, size, 1), jnp.float32)
  table = {"face_generator": (face, sketch), "disc_appearance": (face, face), "disc_shape": (face, sketch)}
  if name not in table:
    raise ValueError(f"unknown face-module network {name!r}; expected one of {sorted(table)}")
  return table[name]


def generate(models: dict[str, nn.Module], params: dict[str, Any], batch: dict[str, jax.Array]) -> jax.Array:
  """Ĩ_F [B, S, S, 3] float32 in [-1, 1] from ``batch['source_face']`` [B, S, S, 3] and
  ``batch['target_sketch']`` [B, S, S, 1] (``params['face_generator']``; others ignored)."""
  return models["face_generator"].apply({"params": params["face_generator"]}, batch["source_face"],
                                        batch["target_sketch"])


# ------------------------------------------------------------------------------- Eq. 2
def _interp_matrix(out_len: int, start: jax.Array, side: jax.Array, size: int) -> jax.Array:
  """[B, out_len, size] bilinear weights: output pixel i samples crop coordinate
  ``u = (i + 0.5 − start) · size / side − 0.5``, clamped to [0, size − 1]."""
  i = jnp.arange(out_len, dtype=jnp.float32)[None, :]
  u = (i + 0.5 - start[:, None]) * size / jnp.maximum(side[:, None], 1.0) - 0.5
  u = jnp.clip(u, 0.0, size - 1.0)
  lo = jnp.floor(u)
  frac = (u - lo)[..., None]
  lo = lo.astype(jnp.int32)
  hi = jnp.minimum(lo + 1, size - 1)
  return (1.0 - frac) * jax.nn.one_hot(lo, size) + frac * jax.nn.one_hot(hi, size)


def paste(faces: jax.Array, boxes: jax.Array, out_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """Places S×S face crops into their boxes of an ``out_hw`` frame (the inverse of the crop).

  Args:
    faces: [B, S, S, C] float.
    boxes: [B, 4] ``(y0, x0, y1, x1)`` square boxes in output pixels (end exclusive), as
      :func:`hpt_jax.input_pipeline.faces.crop_box`; may extend past the frame.
    out_hw: (H, W).

  Returns:
    ``(pasted [B, H, W, C], inside [B, H, W, 1])``: each crop resampled bilinearly over its box
    (a box of side S at integer offsets is copied exactly) and clamped at the crop's edges
    outside it; ``inside`` = 1 for pixels whose centre lies in the box (1[B_F]), else 0. float32.
  """
  s = faces.shape[1]
  boxes = boxes.astype(jnp.float32)
  ry = _interp_matrix(out_hw[0], boxes[:, 0], boxes[:, 2] - boxes[:, 0], s)
  rx = _interp_matrix(out_hw[1], boxes[:, 1], boxes[:, 3] - boxes[:, 1], s)
  pasted = jnp.einsum("bhs,bstc,bwt->bhwc", ry, faces.astype(jnp.float32), rx)
  yc = jnp.arange(out_hw[0], dtype=jnp.float32)[None, :] + 0.5
  xc = jnp.arange(out_hw[1], dtype=jnp.float32)[None, :] + 0.5
  in_y = (yc >= boxes[:, 0:1]) & (yc < boxes[:, 2:3])
  in_x = (xc >= boxes[:, 1:2]) & (xc < boxes[:, 3:4])
  inside = (in_y[:, :, None] & in_x[:, None, :]).astype(jnp.float32)[..., None]
  return pasted, inside


def gaussian_kernel(sigma: float) -> jax.Array:
  """The discrete Gaussian g(σ) of Eq. 2, 1-D: ``exp(−k²/2σ²)`` for k in [−⌈3σ⌉, ⌈3σ⌉], summing to 1
  (float32 [2⌈3σ⌉ + 1]); σ ≤ 0 gives [1] (no blur)."""
  if sigma <= 0:
    return jnp.ones((1,), jnp.float32)
  r = int(math.ceil(3.0 * sigma))
  k = jnp.arange(-r, r + 1, dtype=jnp.float32)
  g = jnp.exp(-0.5 * (k / sigma) ** 2)
  return g / jnp.sum(g)


def gaussian_blur(mask: jax.Array, sigma: float) -> jax.Array:
  """g(σ) * mask: the separable 2-D convolution of [B, H, W, 1] with :func:`gaussian_kernel`, zero
  outside the frame (a box at the border is blurred towards 0 there). float32, same shape."""
  g = gaussian_kernel(sigma)
  x = mask.astype(jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.lax.conv_general_dilated(x, g.reshape(-1, 1, 1, 1), (1, 1), "SAME", dimension_numbers=dn)
  return jax.lax.conv_general_dilated(x, g.reshape(1, -1, 1, 1), (1, 1), "SAME", dimension_numbers=dn)


def blend(body: jax.Array, faces: jax.Array, boxes: jax.Array, face_pair: jax.Array,
          sigma: float) -> tuple[jax.Array, jax.Array]:
  """Eq. 2: ``(1 − M_F) · body + M_F · paste(faces)`` with ``M_F = g(σ) * 1[B_F]``, M_F = 0 where
  ``face_pair`` is False.

  Args:
    body: [B, H, W, 3] the body output Ĩ_c + R_t (float, any range).
    faces: [B, S, S, 3] generated face crops Ĩ_F.
    boxes: [B, 4] int target boxes B_F ``(y0, x0, y1, x1)`` in ``body``'s pixels.
    face_pair: [B] bool, whether the face module applies.
    sigma: the Gaussian's σ in ``body``'s pixels (0: a hard box).

  Returns:
    ``(blended [B, H, W, 3], M_F [B, H, W, 1])``, float32; blended == body where face_pair is False.
  """
  pasted, inside = paste(faces, boxes, body.shape[1:3])
  mask = gaussian_blur(inside, sigma) * face_pair.astype(jnp.float32)[:, None, None, None]
  body = body.astype(jnp.float32)
  return jnp.where(face_pair[:, None, None, None], (1.0 - mask) * body + mask * pasted, body), mask

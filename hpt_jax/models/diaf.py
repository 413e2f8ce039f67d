"""DIAF networks (Flax Linen, NHWC): flow regression U-Net, dual-path generator, pixel-warp net, PatchGAN.

Paper: Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer" (CVPR 2019,
arXiv:1903.11326) §3.2–3.5, §4.1; reference code ly015/intrinsic_flow @ 94ea8f0
``models/networks.py`` (``FlowUnet``, ``DualUnetGenerator``, ``UnetGenerator_MultiOutput``,
``NLayerDiscriminator``) and ``models/pose_transfer_model.py``. Images are in [-1, 1]; pose maps
are 18-channel binary disks
(:func:`hpt_jax.flow.keypoints_to_disks`); flows follow :mod:`hpt_jax.flow` (``(dx, dy)`` pixels,
target → source) and visibility classes 0/1/2 = visible/invisible/background.

Batch normalisation everywhere (paper §4.1 "batch normalization is used after each convolutional
layer (except the last one)"), PyTorch defaults (momentum 0.1 ≙ Flax 0.9, eps 1e-5). Each module
takes ``train``: True = batch statistics (reduced over the *global* batch under ``jax.jit`` with a
sharded batch) and running averages updated (``mutable=['batch_stats']``); False = running
averages. At inference (:func:`generate`) the generator and the pixel-warp net follow their
``bn_mode`` (config ``model.bn_mode``): ``'reference'`` (config default) = batch statistics, as the
reference at test time; ``'running'`` = running averages, so an output does not depend on the
other pairs in its batch (pair it with ``share_downsample=False``: a shared down-sampling BN keeps
one running estimate for two different feature distributions) (its ``PoseTransferModel.train()``/``eval()`` in
``models/pose_transfer_model.py`` are no-ops, so ``netG``/``netPW`` stay in train mode; its flow
network is switched to eval mode, so the flow module always uses running averages).

The structure follows the reference module by module (``tests/test_diaf_import.py`` checks equal
outputs for the same weights); the one structural option is the generator's
``share_downsample`` (reference: the appearance encoder reuses the pose encoder's down-sampling
convolution + BN, ``enca_%d_downsample = p_downsample``; ``False`` = two separate ones, as the
paper's two encoders describe).

Kernel init: Kaiming normal (fan-in), the reference's ``init_type='kaiming'``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpt_jax import errors
from hpt_jax import flow as flow_lib
from hpt_jax import layers

Dtype = Any
kaiming = nn.initializers.kaiming_normal()

#: Flow is predicted in units of 20 pixels (reference ``FlowUnet``: heads output flow/20, the
#: full-resolution flow is multiplied by 20; the multi-scale loss compares with 0.05·target).
FLOW_SCALE = 20.0


def _bn(train: bool, dtype, name=None):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


def _conv(features, kernel, stride=1, padding=None, use_bias=False, dtype=jnp.float32, name=None):
  pad = (kernel - 1) // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=[(pad, pad)] * 2,
                 use_bias=use_bias, kernel_init=kaiming, dtype=dtype, name=name)


def _conv_transpose(features, dtype, name=None, use_bias=False):
  """PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``: exactly doubles H and W."""
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=[(2, 2), (2, 2)], use_bias=use_bias,
                          kernel_init=kaiming, dtype=dtype, name=name)


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
  """PyTorch ``PixelShuffle(factor)`` in NHWC (paper §4.1; Shi et al. 2016).

  Input channel ``c·r² + i·r + j`` becomes output channel ``c`` at sub-pixel (i, j).

  Args:
    x: ``[B, H, W, C·r²]``.
    factor: r.

  Returns:
    ``[B, H·r, W·r, C]``.
  """
  b, h, w, c = x.shape
  r = factor
  x = x.reshape(b, h, w, c // (r * r), r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, c // (r * r))


def _check_divisible(h, w, factor, field):
  if h % factor or w % factor:
    raise errors.ConfigError(f"image size {h}x{w} must be divisible by {factor} ({field})")


# ------------------------------------------------------------------------------ flow module
class FlowRegressionNet(nn.Module):
  """Flow regression module, DIAF §3.3 / Fig. 3; reference ``FlowUnet`` with its
  ``FlowUnetSkipConnectionBlock`` levels (ly015/intrinsic_flow @ 94ea8f0, ``models/networks.py``).

  Stem: cat(p1, p2) (36 channels) → Conv7×7 → nf, BN, LReLU 0.1 → Conv3×3 s2 → c_0 = 2nf, BN,
  LReLU 0.1. U-Net of ``n_levels`` levels on the H/2 features; level l has outer channels
  ``o_l = min(2nf·2^l, max_nf)`` and inner ``o_{l+1}``:

  * down: outermost (l = 0) Conv4×4 s2 → BN (no activation); middle LReLU 0.2 → Conv4×4 s2 → BN;
    innermost (l = n−1) LReLU 0.2 → Conv4×4 s2 (no BN). Bias-free.
  * up: ReLU → ConvT4×4 s2 → o_l → BN (bias only on the outermost ConvT), applied to the deeper
    level's output; that output is ``cat(skip_l, u_l)`` except at the outermost, where it is
    ``u_0`` alone. The skip is the level's input *after* LReLU 0.2 (the reference's in-place
    ``LeakyReLU(0.2, True)`` also rewrites the tensor it concatenates).
  * flow head of level l: LReLU 0.1 → Conv3×3 (bias) → 2 on ``u_l``; visibility head: LReLU 0.1
    → Conv3×3 (bias) → 3 logits on ``u_0``.

  Full-resolution flow and logits: bilinear ×2 of the H/2 outputs (``align_corners=False``), flow
  ×20.

  Attributes:
    nf: stem width (reference 32).
    max_nf: channel cap (reference ``FlowUnet`` default 512).
    n_levels: U-Net levels after the stem (reference ``num_scale``: 5, Market-1501 4); H and W
      must be divisible by 2^(n_levels+1).
    dtype: computation dtype.

  ``__call__(source_pose, target_pose, train)``:
    source_pose, target_pose: ``[B, H, W, 18]`` disk maps in {0, 1}.
    Returns dict ``flow`` [B, H, W, 2] float32 pixels (target → source), ``vis_logits``
    [B, H, W, 3] float32, ``flow_pyramid``: list of ``[B, H/2^(s+1), W/2^(s+1), 2]`` (s = 0 …
    n_levels−1) in units of 20 full-resolution pixels (for the multi-scale loss).

  Raises:
    hpt_jax.errors.ConfigError: H or W not divisible by 2^(n_levels+1).
  """

  nf: int = 32
  max_nf: int = 512
  n_levels: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_pose, target_pose, train: bool = True):
    b, h, w, _ = source_pose.shape
    _check_divisible(h, w, 2 ** (self.n_levels + 1), "flow.n_levels: 2**(n_levels+1)")
    dt = self.dtype
    x = jnp.concatenate([source_pose, target_pose], -1).astype(dt)
    x = nn.leaky_relu(_bn(train, dt, "stem0_bn")(_conv(self.nf, 7, dtype=dt, name="stem0")(x)), 0.1)
    x = nn.leaky_relu(_bn(train, dt, "stem1_bn")(_conv(2 * self.nf, 3, 2, dtype=dt, name="stem1")(x)), 0.1)
    n = self.n_levels
    outer = [min(2 * self.nf * 2 ** l, self.max_nf) for l in range(n + 1)]
    skips = []
    for l in range(n):
      if l > 0:
        x = nn.leaky_relu(x, 0.2)
      skips.append(x)
      x = _conv(outer[l + 1], 4, 2, 1, dtype=dt, name=f"down{l}")(x)
      if l < n - 1:
        x = _bn(train, dt, f"down{l}_bn")(x)
    pyramid = [None] * n
    for l in reversed(range(n)):
      u = _conv_transpose(outer[l], dt, f"up{l}", use_bias=(l == 0))(nn.relu(x))
      u = _bn(train, dt, f"up{l}_bn")(u)
      pyramid[l] = _conv(2, 3, use_bias=True, dtype=dt, name=f"flow_head{l}")(
          nn.leaky_relu(u, 0.1)).astype(jnp.float32)
      x = u if l == 0 else jnp.concatenate([skips[l], u], -1)
    vis = _conv(flow_lib.NUM_VIS_CLASSES, 3, use_bias=True, dtype=dt, name="vis_head")(
        nn.leaky_relu(x, 0.1)).astype(jnp.float32)
    flow = layers.upsample(pyramid[0], "bilinear") * FLOW_SCALE
    vis = layers.upsample(vis, "bilinear")
    return {"flow": flow, "vis_logits": vis, "flow_pyramid": pyramid}


# ---------------------------------------------------------------------------- generator
class ResidualBlock(nn.Module):
  """Pre-activation residual block with one conv (reference ``ResidualBlock``, §3.4 table).

  ``y = x + BN(Conv3×3(act(x)))``; with a side input ``a``:
  ``y = x + BN(Conv3×3(act(cat(x, BN(Conv1×1(act(a)))))))`` (the 1×1 maps ``a`` to C channels).

  ``__call__(x [B,H,W,C], side [B,H,W,Cs] | None, train) → [B,H,W,C]``.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, side=None, train: bool = True):
    c = x.shape[-1]
    h = x
    if side is not None:
      s = _bn(train, self.dtype, "side_bn")(_conv(c, 1, dtype=self.dtype, name="side")(nn.relu(side)))
      h = jnp.concatenate([h, s], -1)
    h = _bn(train, self.dtype, "bn")(_conv(c, 3, dtype=self.dtype, name="conv")(nn.relu(h)))
    return x + h


class FeatureWarp(nn.Module):
  """Flow-guided feature warping with visibility gating, DIAF §3.4 / Fig. 5 (reference ``vis_mode='residual'``).

  ``x_w = warp(x, F_l)`` (:func:`hpt_jax.flow.warp`, bilinear, zero padding); the gated features
  ``cat(x_w·[V_l = visible], x_w·[V_l = invisible])`` (2C channels) enter a residual block as its
  side input: ``out = ResidualBlock(x_w, side=gated)``.

  ``__call__(x [B,h,w,C], flow [B,h,w,2] pixels at this level, vis int [B,h,w], train)`` →
  ``[B,h,w,C]``.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, flow, vis, train: bool = True):
    xw = flow_lib.warp(x, flow)
    visible = (vis == flow_lib.VISIBLE)[..., None].astype(xw.dtype)
    invisible = (vis == flow_lib.INVISIBLE)[..., None].astype(xw.dtype)
    gated = jnp.concatenate([xw * visible, xw * invisible], -1)
    return ResidualBlock(self.dtype, name="gate")(xw, gated, train)


BN_MODES = ("running", "reference")


class DualUNetGenerator(nn.Module):
  """Dual-path U-Net generator with flow-guided feature warping, DIAF §3.2/§3.4/§4.1; reference
  ``DualUnetGenerator`` (ly015/intrinsic_flow @ 94ea8f0, ``models/networks.py``; ``vis_mode=
  'residual'``, ``norm='batch'``, ReLU, ``no_end_norm=0``).

  * Level l (0 … n_scales−1) has ``c_l = min(nf·(l+1), max_nf)`` channels at H/2^l.
  * Pose encoder (target pose p2) and appearance encoder (source image x1): 1×1 conv + BN to c_0;
    per level 2 residual blocks (each output is a skip) then act → Conv3×3 s2 → BN to c_{l+1}.
    ``share_downsample=True`` (reference): both encoders use the same down-sampling conv + BN
    (``enca_%d_downsample = p_downsample``, ``encp_{l}_down`` here); ``False``: the appearance
    encoder has its own (``enca_{l}_down``), as the paper's two encoders describe.
  * Feature warping (levels l < ``n_warp_scales``): both appearance skips of level l pass through
    :class:`FeatureWarp` with ``F_l = avgpool(F, 2^l)/2^l`` and ``V_l`` = min-pool of V; only the
    skips are warped, the unwarped features continue down (reference).
  * Bottleneck: Conv1×1(cat(pose, appearance)) → BN.
  * Decoder level l: act → Conv3×3 to 4·c_l → PixelShuffle(2) → BN (paper §4.1), then residual
    blocks ``dec_{l}_res{k}`` for k = n_res_blocks−1 … 0 whose side input is cat(pose skip k,
    warped appearance skip k) of that level.
  * Output: ReflectionPad 3 → Conv7×7 (bias) → 3 → tanh (no activation before the pad, as the
    reference's ``dec_output``; the tanh is the reference model's ``F.tanh``).

  Attributes:
    nf: base width (reference 32). max_nf: cap (reference 128).
    n_scales: levels N (paper 7, Market-1501 5; H, W divisible by 2^N). n_warp_scales: warped
      levels (reference 5, Market-1501 4).
    n_res_blocks: residual blocks per level (paper 2).
    share_downsample: see above (reference True).
    bn_mode: how :func:`generate` runs it at inference (``'running'`` | ``'reference'``, module
      docstring); ``__call__`` itself follows ``train``.
    dtype: computation dtype.

  ``__call__(source_image [B,H,W,3], target_pose [B,H,W,18], flow [B,H,W,2], vis int [B,H,W],
  train)`` → ``[B,H,W,3]`` float32 in (−1, 1).
  """

  nf: int = 32
  max_nf: int = 128
  n_scales: int = 7
  n_warp_scales: int = 5
  n_res_blocks: int = 2
  share_downsample: bool = True
  bn_mode: str = "running"
  dtype: Dtype = jnp.float32

  def _c(self, level):
    return min(self.nf * (level + 1), self.max_nf)

  @nn.compact
  def __call__(self, source_image, target_pose, flow, vis, train: bool = True):
    b, h, w, _ = source_image.shape
    _check_divisible(h, w, 2 ** self.n_scales, "model.n_scales: 2**n_scales")
    if self.n_warp_scales > self.n_scales:
      raise errors.ConfigError(f"model.n_warp_scales={self.n_warp_scales} exceeds model.n_scales={self.n_scales}")
    dt = self.dtype
    xp = _bn(train, dt, "pre_p_bn")(_conv(self._c(0), 1, dtype=dt, name="pre_p")(target_pose.astype(dt)))
    xa = _bn(train, dt, "pre_a_bn")(_conv(self._c(0), 1, dtype=dt, name="pre_a")(source_image.astype(dt)))
    skips_p, skips_a = [], []
    for l in range(self.n_scales):
      sp, sa = [], []
      for r in range(self.n_res_blocks):
        xp = ResidualBlock(dt, name=f"encp_{l}_res{r}")(xp, None, train)
        xa = ResidualBlock(dt, name=f"enca_{l}_res{r}")(xa, None, train)
        sp.append(xp)
        sa.append(xa)
      if l < self.n_warp_scales:
        f_l = flow_lib.downsample_flow(flow, 2 ** l)
        v_l = flow_lib.downsample_visibility(vis, 2 ** l)
        sa = [FeatureWarp(dt, name=f"warp_{l}_{r}")(s, f_l, v_l, train) for r, s in enumerate(sa)]
      skips_p.append(sp)
      skips_a.append(sa)
      c_next = self._c(l + 1)
      down_p = _conv(c_next, 3, 2, dtype=dt, name=f"encp_{l}_down")
      bn_p = _bn(train, dt, f"encp_{l}_down_bn")
      if self.share_downsample:
        down_a, bn_a = down_p, bn_p
      else:
        down_a, bn_a = _conv(c_next, 3, 2, dtype=dt, name=f"enca_{l}_down"), _bn(train, dt, f"enca_{l}_down_bn")
      xp = bn_p(down_p(nn.relu(xp)))
      xa = bn_a(down_a(nn.relu(xa)))
    hdec = _bn(train, dt, "bottleneck_bn")(
        _conv(self._c(self.n_scales), 1, dtype=dt, name="bottleneck")(jnp.concatenate([xp, xa], -1)))
    for l in reversed(range(self.n_scales)):
      c = self._c(l)
      hdec = _conv(4 * c, 3, dtype=dt, name=f"dec_{l}_up")(nn.relu(hdec))
      hdec = _bn(train, dt, f"dec_{l}_up_bn")(pixel_shuffle(hdec, 2))
      for k in reversed(range(self.n_res_blocks)):
        side = jnp.concatenate([skips_p[l][k], skips_a[l][k]], -1)
        hdec = ResidualBlock(dt, name=f"dec_{l}_res{k}")(hdec, side, train)
    out = nn.Conv(3, (7, 7), padding="VALID", kernel_init=kaiming, dtype=dt, name="out")(layers.reflect_pad(hdec, 3))
    return jnp.tanh(out.astype(jnp.float32))


class PixelWarpNet(nn.Module):
  """Pixel-warping fusion weight network, DIAF §3.5 Eq. 3; reference ``UnetGenerator_MultiOutput``
  (ly015/intrinsic_flow @ 94ea8f0, ``models/networks.py``, one output branch; the fusion is in
  ``models/pose_transfer_model.py``).

  Input cat(generated image, warped source image, visibility, flow) — the reference's 9 channels
  ``img_out_G+img_warp+vis_out+flow_out``: visibility as one channel holding the class index
  0/1/2, flow in pixels (background zeroed). A residual U-Net of the generator's kind with one
  encoder: 1×1 conv + BN to ``c_0``; per level (``c_l = min(nf·(l+1), max_nf)``) 2 residual blocks
  (skips), act → Conv3×3 s2 → BN; decoder act → Conv3×3 to 4·c_l → PixelShuffle(2) → BN, residual
  blocks ``dec_{l}_res{k}`` (k = n−1 … 0) with skip k as side input; head Conv1×1 + BN → ReLU →
  ReflectionPad 3 → Conv7×7 (bias) → 1 → sigmoid = the soft mask z ∈ (0, 1).

  Attributes:
    nf: width (reference 32). max_nf: cap (reference 128). n_scales: levels (reference: the
    generator's, 7; Market-1501 5; H, W divisible by 2^n_scales). n_res_blocks: per level (2).
    bn_mode: as :class:`DualUNetGenerator`. dtype: computation dtype.

  ``__call__(generated [B,H,W,3], warped [B,H,W,3], flow [B,H,W,2], vis int [B,H,W], train)`` →
  z ``[B,H,W,1]`` float32 in (0, 1).
  """

  nf: int = 32
  max_nf: int = 128
  n_scales: int = 7
  n_res_blocks: int = 2
  bn_mode: str = "running"
  dtype: Dtype = jnp.float32

  def _c(self, level):
    return min(self.nf * (level + 1), self.max_nf)

  @nn.compact
  def __call__(self, generated, warped, flow, vis, train: bool = True):
    b, h, w, _ = generated.shape
    _check_divisible(h, w, 2 ** self.n_scales, "pixel_warp_model.n_scales: 2**n_scales")
    dt = self.dtype
    x = jnp.concatenate([generated, warped, vis[..., None].astype(jnp.float32), flow], -1).astype(dt)
    x = _bn(train, dt, "pre_bn")(_conv(self._c(0), 1, dtype=dt, name="pre")(x))
    skips = []
    for l in range(self.n_scales):
      for r in range(self.n_res_blocks):
        x = ResidualBlock(dt, name=f"enc_{l}_res{r}")(x, None, train)
        skips.append(x)
      x = _bn(train, dt, f"enc_{l}_down_bn")(_conv(self._c(l + 1), 3, 2, dtype=dt, name=f"enc_{l}_down")(nn.relu(x)))
    for l in reversed(range(self.n_scales)):
      c = self._c(l)
      x = _conv(4 * c, 3, dtype=dt, name=f"dec_{l}_up")(nn.relu(x))
      x = _bn(train, dt, f"dec_{l}_up_bn")(pixel_shuffle(x, 2))
      for k in reversed(range(self.n_res_blocks)):
        x = ResidualBlock(dt, name=f"dec_{l}_res{k}")(x, skips.pop(), train)
    z = nn.relu(_bn(train, dt, "head_bn")(_conv(self.nf, 1, dtype=dt, name="head")(x)))
    z = nn.Conv(1, (7, 7), padding="VALID", kernel_init=kaiming, dtype=dt, name="out")(layers.reflect_pad(z, 3))
    return jax.nn.sigmoid(z.astype(jnp.float32))


class PatchDiscriminator(nn.Module):
  """Conditional PatchGAN (pix2pix ``NLayerDiscriminator``), DIAF §3.2/§4.1: 70×70 receptive field
  with 3 layers.

  Input cat(source image, target pose, image) (3 + 18 + 3 channels; the paper's (x1, p2, x̂2)).
  Conv4×4 s2 → ndf, LReLU 0.2; ``n_layers − 1`` more stride-2 convs doubling width (cap 8·ndf)
  with BN + LReLU; Conv4×4 s1 → min(2^n_layers, 8)·ndf, BN, LReLU; Conv4×4 s1 → 1 logit (padding 1
  each). Output logits ``[B, H/2^n_layers − 2, W/2^n_layers − 2, 1]`` float32 (30×30 at 256², no
  sigmoid: the loss uses the logit form of BCE).

  Attributes:
    ndf: width (reference 64). n_layers: 3 gives the 70×70 receptive field. dtype.
  """

  ndf: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_image, target_pose, image, train: bool = True):
    x = jnp.concatenate([source_image, target_pose, image], -1).astype(self.dtype)
    x = nn.leaky_relu(_conv(self.ndf, 4, 2, 1, use_bias=True, dtype=self.dtype, name="conv0")(x), 0.2)
    mult = 1
    for i in range(1, self.n_layers):
      mult = min(2 ** i, 8)
      x = _conv(self.ndf * mult, 4, 2, 1, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.leaky_relu(_bn(train, self.dtype, f"bn{i}")(x), 0.2)
    mult = min(2 ** self.n_layers, 8)
    x = _conv(self.ndf * mult, 4, 1, 1, dtype=self.dtype, name=f"conv{self.n_layers}")(x)
    x = nn.leaky_relu(_bn(train, self.dtype, f"bn{self.n_layers}")(x), 0.2)
    x = _conv(1, 4, 1, 1, use_bias=True, dtype=self.dtype, name="out")(x)
    return x.astype(jnp.float32)


def patch_receptive_field(n_layers: int) -> int:
  """Receptive field in pixels of one :class:`PatchDiscriminator` output (70 for n_layers = 3)."""
  rf = 1
  for stride in [1, 1] + [2] * n_layers:   # walk back from the output: two s1 convs, then s2 ones
    rf = (rf - 1) * stride + 4
  return rf


def build_models(config, dtype=jnp.float32) -> dict[str, nn.Module]:
  """The four DIAF networks from a ``hpt_jax/configs/deepfashion_diaf.py`` config.

  Returns ``{'flow': FlowRegressionNet, 'generator': DualUNetGenerator, 'pixel_warp':
  PixelWarpNet, 'disc': PatchDiscriminator}``; ``model.bn_mode`` and ``model.share_downsample``
  (absent: ``'reference'``, True) go to the generator, ``bn_mode`` to the pixel-warp net too.

  Raises:
    hpt_jax.errors.ConfigError: an unknown ``model.bn_mode``.
  """
  f, g, p, d = config.flow_model, config.model, config.pixel_warp_model, config.disc
  bn_mode = g.get("bn_mode", "reference")
  if bn_mode not in BN_MODES:
    raise errors.ConfigError(f"model.bn_mode={bn_mode!r}; expected one of {BN_MODES}")
  return {
      "flow": FlowRegressionNet(f.nf, f.max_nf, f.n_levels, dtype),
      "generator": DualUNetGenerator(g.nf, g.max_nf, g.n_scales, g.n_warp_scales, g.n_res_blocks,
                                     bool(g.get("share_downsample", True)), bn_mode, dtype),
      "pixel_warp": PixelWarpNet(p.nf, p.max_nf, p.n_scales, g.n_res_blocks, bn_mode, dtype),
      "disc": PatchDiscriminator(d.ndf, d.n_layers, dtype),
  }


def predict_flow(flow_net: nn.Module, variables: dict, source_pose: jax.Array,
                 target_pose: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The flow module in inference mode (running BN averages), DIAF §3.3.

  Args:
    flow_net: :class:`FlowRegressionNet`. variables: its ``{'params', 'batch_stats'}``.
    source_pose, target_pose: float ``[B, H, W, 18]`` binary disks.

  Returns:
    ``(flow, vis, raw_flow)``: ``flow`` float32 ``[B, H, W, 2]`` (dx, dy) pixels target → source,
    zeroed where ``vis`` is background; ``vis = argmax`` of the visibility logits, int32
    ``[B, H, W]`` (0 visible, 1 invisible, 2 background); ``raw_flow`` the regressed flow before
    that masking (what the flow EPE scores).
  """
  out = flow_net.apply(variables, source_pose, target_pose, train=False)
  vis = jnp.argmax(out["vis_logits"], -1).astype(jnp.int32)
  flow = out["flow"] * (vis < flow_lib.BACKGROUND)[..., None]
  return flow, vis, out["flow"]


def warp_source(source_image: jax.Array, flow: jax.Array, vis: jax.Array) -> jax.Array:
  """x_w = warp(x1, F) with background pixels (V = 2) set to −1 (reference pixel warping, §3.5).

  Shapes: ``[B, H, W, 3]`` image, ``[B, H, W, 2]`` flow, int ``[B, H, W]`` visibility → ``[B, H, W, 3]``.
  """
  warped = flow_lib.warp(source_image, flow)
  return jnp.where((vis == flow_lib.BACKGROUND)[..., None], -1.0, warped)


def apply_frozen(module: nn.Module, variables: dict, *args) -> jax.Array:
  """Runs a generator or pixel-warp net that is not being trained, as its ``bn_mode`` says.

  ``'running'``: ``train=False`` (running averages). ``'reference'``: batch statistics of this
  batch (``train=True``; the running-average update is discarded), the reference's test-time
  behaviour — the output of a pair then depends on the other pairs in its batch (padding rows
  included). Args and result as the module's ``__call__``.
  """
  if getattr(module, "bn_mode", "running") == "reference":
    out, _ = module.apply(variables, *args, train=True, mutable=["batch_stats"])
    return out
  return module.apply(variables, *args, train=False)


def generate(models: dict[str, nn.Module], nets: dict[str, dict], batch: dict) -> dict[str, jax.Array]:
  """DIAF inference with the networks present in ``nets``, DIAF §3.2–3.5. The flow module uses
  running BN averages; the generator and pixel-warp net follow their ``bn_mode``
  (:func:`apply_frozen`).

  Args:
    models: :func:`build_models`' dict.
    nets: ``{network: {'params', 'batch_stats'}}``; ``flow`` is required, ``generator`` and
      ``pixel_warp`` are optional (a run whose later phases have not finished).
    batch: ``source_image`` float ``[B, H, W, 3]`` in [-1, 1], ``source_pose``/``target_pose``
      float ``[B, H, W, 18]`` binary disks.

  Returns:
    dict: ``flow`` (masked by V < 2), ``raw_flow`` float32 ``[B, H, W, 2]``, ``vis`` int32
    ``[B, H, W]``, ``warped`` (x_w) always; ``generated`` (x̃2) if the generator is present;
    ``mask`` z ``[B, H, W, 1]`` in [0, 1] and ``final`` x̂2 = z·x_w + (1 − z)·x̃2 (Eq. 3) if the
    pixel-warp net is present too. Images ``[B, H, W, 3]`` in [-1, 1].
  """
  flow, vis, raw = predict_flow(models["flow"], nets["flow"], batch["source_pose"], batch["target_pose"])
  out = {"flow": flow, "raw_flow": raw, "vis": vis, "warped": warp_source(batch["source_image"], flow, vis)}
  if "generator" in nets:
    out["generated"] = apply_frozen(models["generator"], nets["generator"], batch["source_image"],
                                    batch["target_pose"], flow, vis)
    if "pixel_warp" in nets:
      z = apply_frozen(models["pixel_warp"], nets["pixel_warp"], out["generated"], out["warped"], flow, vis)
      out["mask"] = z
      out["final"] = z * out["warped"] + (1 - z) * out["generated"]
  return out


def init_inputs(name: str, image_shape: tuple[int, int]) -> tuple[jax.ShapeDtypeStruct, ...]:
  """Abstract inputs (batch 1) that initialise network ``name`` for ``image_shape`` (H, W).

  ``flow``: (pose, pose); ``generator``: (image, pose, flow, visibility); ``pixel_warp``: (image,
  image, flow, visibility); ``disc``: (image, pose, image). Images float32 [1, H, W, 3], poses
  [1, H, W, 18], flow [1, H, W, 2], visibility int32 [1, H, W]. For ``jax.eval_shape`` of ``init``.

  Raises:
    ValueError: unknown network name.
  """
  h, w = image_shape
  img = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  pose = jax.ShapeDtypeStruct((1, h, w, 18), jnp.float32)
  fl = jax.ShapeDtypeStruct((1, h, w, 2), jnp.float32)
  vis = jax.ShapeDtypeStruct((1, h, w), jnp.int32)
  table = {"flow": (pose, pose), "generator": (img, pose, fl, vis), "pixel_warp": (img, img, fl, vis),
           "disc": (img, pose, img)}
  if name not in table:
    raise ValueError(f"unknown DIAF network {name!r}; expected one of {sorted(table)}")
  return table[name]


def abstract_variables(models: dict[str, nn.Module], name: str, image_shape: tuple[int, int]) -> dict:
  """``{'params', 'batch_stats'}`` shape tree of network ``name`` (``jax.eval_shape`` of ``init``)."""
  return jax.eval_shape(lambda *a: models[name].init(jax.random.PRNGKey(0), *a, train=False),
                        *init_inputs(name, image_shape))


# ----------------------------------------------------------------------------- weight mapping
#: The reference's state-dict file of each network (``checkpoints/<id>/<epoch>_net_<name>.pth``).
REFERENCE_FILES = {"flow": "netF", "generator": "netG", "pixel_warp": "netPW"}


def _t_conv(table, torch_key, flax_path, bias=False):
  table[f"{torch_key}.weight"] = ("params", f"{flax_path}/kernel", "conv")
  if bias:
    table[f"{torch_key}.bias"] = ("params", f"{flax_path}/bias", "copy")


def _t_bn(table, dropped, torch_key, flax_path):
  table[f"{torch_key}.weight"] = ("params", f"{flax_path}/scale", "copy")
  table[f"{torch_key}.bias"] = ("params", f"{flax_path}/bias", "copy")
  table[f"{torch_key}.running_mean"] = ("batch_stats", f"{flax_path}/mean", "copy")
  table[f"{torch_key}.running_var"] = ("batch_stats", f"{flax_path}/var", "copy")
  dropped[f"{torch_key}.num_batches_tracked"] = "batch-norm step counter (unused at inference)"


def _t_res(table, dropped, torch_key, flax_path, side):
  if side:
    _t_conv(table, f"{torch_key}.conv_a.0", f"{flax_path}/side")
    _t_bn(table, dropped, f"{torch_key}.conv_a.1", f"{flax_path}/side_bn")
  _t_conv(table, f"{torch_key}.conv.0", f"{flax_path}/conv")
  _t_bn(table, dropped, f"{torch_key}.conv.1", f"{flax_path}/bn")


def state_dict_layout(network: str, module: nn.Module) -> tuple[dict, dict]:
  """PyTorch key → Flax path table of one DIAF network (ly015/intrinsic_flow @ 94ea8f0,
  ``models/networks.py``; ``norm='batch'``).

  ``flow`` ↔ ``FlowUnet`` (``conv_downsample.{0,1,3,4}``, level l under
  ``unet_block.`` + ``submodule.``·l with ``down``/``up``/``predict_flow``, ``predict_vis.1``);
  ``generator`` ↔ ``DualUnetGenerator`` (``vis_mode='residual'``; ``enc{p,a}_pre_conv``,
  ``enc{p,a}_<l>_res_<i>``, ``enca_<l>_vis_<i>`` → ``warp_<l>_<i>/gate``,
  ``enc{p,a}_<l>_downsample.{1,2}``, ``dec_fuse``, ``dec_<l>_upsample.{1,3}``, ``dec_<l>_res_<i>``,
  ``dec_output.1``); ``pixel_warp`` ↔ ``UnetGenerator_MultiOutput`` with one output branch
  (``pre_conv``, ``enc_*``, ``dec_*``, ``dec_output_0.{0.0,0.1,3}``). With
  ``share_downsample`` the reference's ``enca_<l>_downsample`` (the same tensors as
  ``encp_<l>_downsample``) maps onto ``encp_<l>_down`` too.

  Args:
    network: ``'flow'``, ``'generator'`` or ``'pixel_warp'``.
    module: the matching :func:`build_models` network (its fields fix the levels).

  Returns:
    ``(table, dropped)``: ``table`` maps a key to ``(collection, flax path, rule)``, rule
    ``'conv'`` (OIHW → HWIO), ``'conv_transpose'`` (IOHW → HWIO, flipped) or ``'copy'``;
    ``dropped`` maps keys that may be present and are ignored to the reason.

  Raises:
    ValueError: unknown network.
  """
  table: dict[str, tuple[str, str, str]] = {}
  dropped: dict[str, str] = {}
  if network == "flow":
    _t_conv(table, "conv_downsample.0", "stem0")
    _t_bn(table, dropped, "conv_downsample.1", "stem0_bn")
    _t_conv(table, "conv_downsample.3", "stem1")
    _t_bn(table, dropped, "conv_downsample.4", "stem1_bn")
    n = module.n_levels
    for l in range(n):
      p = "unet_block." + "submodule." * l
      d = 0 if l == 0 else 1                       # the outermost down has no activation
      _t_conv(table, f"{p}down.{d}", f"down{l}")
      if l < n - 1:
        _t_bn(table, dropped, f"{p}down.{d + 1}", f"down{l}_bn")
      table[f"{p}up.1.weight"] = ("params", f"up{l}/kernel", "conv_transpose")
      if l == 0:
        table[f"{p}up.1.bias"] = ("params", f"up{l}/bias", "copy")
      _t_bn(table, dropped, f"{p}up.2", f"up{l}_bn")
      _t_conv(table, f"{p}predict_flow.1", f"flow_head{l}", bias=True)
    _t_conv(table, "predict_vis.1", "vis_head", bias=True)
  elif network == "generator":
    for e, s in (("p", "p"), ("a", "a")):
      _t_conv(table, f"enc{e}_pre_conv.0", f"pre_{s}")
      _t_bn(table, dropped, f"enc{e}_pre_conv.1", f"pre_{s}_bn")
    for l in range(module.n_scales):
      for i in range(module.n_res_blocks):
        for e in "pa":
          _t_res(table, dropped, f"enc{e}_{l}_res_{i}", f"enc{e}_{l}_res{i}", side=False)
        if l < module.n_warp_scales:
          _t_res(table, dropped, f"enca_{l}_vis_{i}", f"warp_{l}_{i}/gate", side=True)
        _t_res(table, dropped, f"dec_{l}_res_{i}", f"dec_{l}_res{i}", side=True)
      for e in "pa":
        target = "p" if module.share_downsample else e
        _t_conv(table, f"enc{e}_{l}_downsample.1", f"enc{target}_{l}_down")
        _t_bn(table, dropped, f"enc{e}_{l}_downsample.2", f"enc{target}_{l}_down_bn")
      _t_conv(table, f"dec_{l}_upsample.1", f"dec_{l}_up")
      _t_bn(table, dropped, f"dec_{l}_upsample.3", f"dec_{l}_up_bn")
    _t_conv(table, "dec_fuse.0", "bottleneck")
    _t_bn(table, dropped, "dec_fuse.1", "bottleneck_bn")
    _t_conv(table, "dec_output.1", "out", bias=True)
  elif network == "pixel_warp":
    _t_conv(table, "pre_conv.0", "pre")
    _t_bn(table, dropped, "pre_conv.1", "pre_bn")
    for l in range(module.n_scales):
      for i in range(module.n_res_blocks):
        _t_res(table, dropped, f"enc_{l}_res_{i}", f"enc_{l}_res{i}", side=False)
        _t_res(table, dropped, f"dec_{l}_res_{i}", f"dec_{l}_res{i}", side=True)
      _t_conv(table, f"enc_{l}_downsample.1", f"enc_{l}_down")
      _t_bn(table, dropped, f"enc_{l}_downsample.2", f"enc_{l}_down_bn")
      _t_conv(table, f"dec_{l}_upsample.1", f"dec_{l}_up")
      _t_bn(table, dropped, f"dec_{l}_upsample.3", f"dec_{l}_up_bn")
    _t_conv(table, "dec_output_0.0.0", "head")
    _t_bn(table, dropped, "dec_output_0.0.1", "head_bn")
    _t_conv(table, "dec_output_0.3", "out", bias=True)
  else:
    raise ValueError(f"unknown DIAF network {network!r}; expected 'flow', 'generator' or 'pixel_warp'")
  return table, dropped


def convert_state_dict(tensors, network: str, models: dict[str, nn.Module],
                       image_shape: tuple[int, int]) -> tuple[dict, dict[str, str]]:
  """Maps one reference DIAF state dict onto network ``network`` (:func:`state_dict_layout`).

  Args:
    tensors: ``{torch key: array}`` (:func:`hpt_jax.torch_checkpoint.read_tensors`; a
      ``module.`` prefix from ``DataParallel`` is stripped).
    network: ``'flow'``, ``'generator'`` or ``'pixel_warp'``.
    models: :func:`build_models`' dict (its fields fix the shapes).
    image_shape: (H, W) the network is initialised for.

  Returns:
    ``(variables, dropped)``: ``{'params', 'batch_stats'}`` nested dicts of float32 NumPy arrays,
    ``{torch key: reason}`` of the tensors deliberately ignored.

  Raises:
    hpt_jax.models.patn.WeightMismatchError: unmatched keys, parameters the file lacks, shape
      mismatches, or (``share_downsample``) pose/appearance down-sampling tensors that differ.
  """
  import flax
  from hpt_jax.models import patn   # the PATN importer's error type and tensor rules (one place)

  module = models[network]
  expected = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(abstract_variables(models, network, image_shape)), sep="/")
  table, dropped = state_dict_layout(network, module)
  keys = {k[len("module."):] if k.startswith("module.") else k: k for k in tensors}
  # With share_downsample the pose and appearance encoders' down-sampling keys name one path.
  return patn.map_state_dict(
      tensors, keys, table, dropped, expected, f"the DIAF {network} network ({module})",
      shared_hint="separate down-sampling convolutions: set model.share_downsample=False")

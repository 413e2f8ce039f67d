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
averages. The reference never switches its generator to eval mode (its ``train()``/``eval()`` in
``models/pose_transfer_model.py`` are no-ops); we use
running averages for frozen networks and inference, the standard behaviour.

Kernel init: Kaiming normal (fan-in), the reference's ``init_type='kaiming'``.
"""

from __future__ import annotations

from typing import Any, Sequence

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


def _conv_transpose(features, dtype, name=None):
  """PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``: exactly doubles H and W."""
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=[(2, 2), (2, 2)], use_bias=False,
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


# ------------------------------------------------------------------------ pix2pix U-Net core
class Pix2PixUNet(nn.Module):
  """pix2pix ``UnetSkipConnectionBlock`` stack returning the decoder features of every level.

  The input ``x`` is the level-0 skip. Down level i (0 … n−1): [LReLU 0.2, except i = 0] →
  Conv4×4 s2 → ``channels[i]`` → [BN, except the outermost and innermost], giving the skip of
  level i+1 at 1/2^(i+1). Up, from the innermost: ReLU → ConvT4×4 s2 → BN to the channels of the
  next-outer skip, concatenated with it (reference pix2pix / ``FlowUnet``, ``models/networks.py``).

  Attributes:
    channels: output channels of the n down convs (FlowUnet: (128, 256, 512, 512, 512)).
    dtype: computation dtype.

  ``__call__(x [B, H, W, C], train)`` → list ``[u_0, …, u_{n-1}]``; ``u_i`` is
  ``[B, H/2^i, W/2^i, 2·C_i]`` (skip i concatenated with the up-sampled deeper features; C_0 = C).
  H and W must be divisible by 2^n.
  """

  channels: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    n = len(self.channels)
    skips = [x]
    h = x
    for i, c in enumerate(self.channels):
      if i > 0:
        h = nn.leaky_relu(h, 0.2)
      h = _conv(c, 4, 2, 1, dtype=self.dtype, name=f"down{i}")(h)
      if 0 < i < n - 1:
        h = _bn(train, self.dtype, f"down{i}_bn")(h)
      skips.append(h)
    outs = []
    u = skips[-1]
    for i in reversed(range(n)):
      target_c = skips[i].shape[-1]
      u = _conv_transpose(target_c, self.dtype, f"up{i}")(nn.relu(u))
      u = _bn(train, self.dtype, f"up{i}_bn")(u)
      u = jnp.concatenate([skips[i], u], -1)
      outs.append(u)
    return outs[::-1]


class FlowRegressionNet(nn.Module):
  """Flow regression module, DIAF §3.3 / Fig. 3; reference ``FlowUnet`` (``models/networks.py``).

  Input cat(p1, p2) (36 channels) → stem (Conv7×7 → nf, BN, LReLU 0.1; Conv3×3 s2 → 2nf, BN,
  LReLU 0.1) → pix2pix U-Net of ``n_levels`` levels on the H/2 features (channels
  ``min(2nf·2^i, max_nf)``). A flow head (LReLU 0.1 → Conv3×3 → 2) on the decoder feature of
  every level (H/2 … H/2^n_levels); a visibility head (LReLU 0.1 → Conv3×3 → 3 logits) on the
  outermost one. Full-resolution flow and logits: bilinear ×2 of the H/2 outputs, flow ×20.

  Attributes:
    nf: stem width (reference 32).
    max_nf: channel cap (reference 512).
    n_levels: U-Net levels after the stem (reference 5); H and W must be divisible by
      2^(n_levels+1).
    dtype: computation dtype.

  ``__call__(source_pose, target_pose, train)``:
    source_pose, target_pose: ``[B, H, W, 18]`` disk maps in {0, 1}.
    Returns dict ``flow`` [B, H, W, 2] float32 pixels (target → source), ``vis_logits``
    [B, H, W, 3] float32, ``flow_pyramid``: list of ``[B, H/2^(s+1), W/2^(s+1), 2]`` (s = 0 …
    n_levels−1) in units of 20 full-resolution pixels (for the multi-scale loss).
  """

  nf: int = 32
  max_nf: int = 512
  n_levels: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_pose, target_pose, train: bool = True):
    b, h, w, _ = source_pose.shape
    _check_divisible(h, w, 2 ** (self.n_levels + 1), "flow.n_levels: 2**(n_levels+1)")
    x = jnp.concatenate([source_pose, target_pose], -1).astype(self.dtype)
    x = nn.leaky_relu(_bn(train, self.dtype, "stem0_bn")(_conv(self.nf, 7, dtype=self.dtype, name="stem0")(x)), 0.1)
    x = nn.leaky_relu(_bn(train, self.dtype, "stem1_bn")(_conv(2 * self.nf, 3, 2, dtype=self.dtype, name="stem1")(x)), 0.1)
    channels = [min(2 * self.nf * 2 ** (i + 1), self.max_nf) for i in range(self.n_levels)]
    feats = Pix2PixUNet(channels, self.dtype, name="unet")(x, train)
    pyramid = []
    for s, f in enumerate(feats):
      pyramid.append(_conv(2, 3, use_bias=True, dtype=self.dtype, name=f"flow_head{s}")(
          nn.leaky_relu(f, 0.1)).astype(jnp.float32))
    vis = _conv(flow_lib.NUM_VIS_CLASSES, 3, use_bias=True, dtype=self.dtype, name="vis_head")(
        nn.leaky_relu(feats[0], 0.1)).astype(jnp.float32)
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


class DualUNetGenerator(nn.Module):
  """Dual-path U-Net generator with flow-guided feature warping, DIAF §3.2/§3.4/§4.1; reference
  ``DualUnetGenerator`` (``models/networks.py``).

  * Level l (0 … n_scales−1) has ``c_l = min(nf·(l+1), max_nf)`` channels at H/2^l.
  * Pose encoder (target pose p2) and appearance encoder (source image x1): 1×1 conv + BN to c_0;
    per level 2 residual blocks (each output is a skip) then act → Conv3×3 s2 → BN to c_{l+1}.
    The reference's two encoders share their down-sampling convs by a bug (``enca_%d_downsample
    = p_downsample``); the paper describes two encoders, so ours are separate.
  * Feature warping (levels l < ``n_warp_scales``): both appearance skips of level l pass through
    :class:`FeatureWarp` with ``F_l = avgpool(F, 2^l)/2^l`` and ``V_l`` = min-pool of V; only the
    skips are warped, the unwarped features continue down (reference).
  * Bottleneck: Conv1×1(cat(pose, appearance)) → BN.
  * Decoder level l: act → Conv3×3 to 4·c_l → PixelShuffle(2) → BN (paper §4.1), then 2 residual
    blocks whose side input is cat(pose skip, warped appearance skip) of that level (mirrored order).
  * Output: act → ReflectionPad 3 → Conv7×7 (bias) → 3 → tanh.

  Attributes:
    nf: base width (reference 32). max_nf: cap (reference 128).
    n_scales: levels N (paper 7; H, W divisible by 2^N). n_warp_scales: warped levels (reference 5).
    n_res_blocks: residual blocks per level (paper 2).
    dtype: computation dtype.

  ``__call__(source_image [B,H,W,3], target_pose [B,H,W,18], flow [B,H,W,2], vis int [B,H,W],
  train)`` → ``[B,H,W,3]`` float32 in (−1, 1).
  """

  nf: int = 32
  max_nf: int = 128
  n_scales: int = 7
  n_warp_scales: int = 5
  n_res_blocks: int = 2
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
      xp = _bn(train, dt, f"encp_{l}_down_bn")(_conv(c_next, 3, 2, dtype=dt, name=f"encp_{l}_down")(nn.relu(xp)))
      xa = _bn(train, dt, f"enca_{l}_down_bn")(_conv(c_next, 3, 2, dtype=dt, name=f"enca_{l}_down")(nn.relu(xa)))
    hdec = _bn(train, dt, "bottleneck_bn")(
        _conv(self._c(self.n_scales), 1, dtype=dt, name="bottleneck")(jnp.concatenate([xp, xa], -1)))
    for l in reversed(range(self.n_scales)):
      c = self._c(l)
      hdec = _conv(4 * c, 3, dtype=dt, name=f"dec_{l}_up")(nn.relu(hdec))
      hdec = _bn(train, dt, f"dec_{l}_up_bn")(pixel_shuffle(hdec, 2))
      for r in range(self.n_res_blocks):
        k = self.n_res_blocks - 1 - r
        side = jnp.concatenate([skips_p[l][k], skips_a[l][k]], -1)
        hdec = ResidualBlock(dt, name=f"dec_{l}_res{r}")(hdec, side, train)
    out = layers.reflect_pad(nn.relu(hdec), 3)
    out = nn.Conv(3, (7, 7), padding="VALID", kernel_init=kaiming, dtype=dt, name="out")(out)
    return jnp.tanh(out.astype(jnp.float32))


class PixelWarpNet(nn.Module):
  """Pixel-warping fusion weight network, DIAF §3.5 Eq. 3; reference ``UnetGenerator_MultiOutput``
  (``models/networks.py``; the fusion is in ``models/pose_transfer_model.py``).

  Input cat(generated image, warped source image, visibility, flow/20) — 9 channels as the
  reference (visibility as one channel holding the class index 0/1/2) → Conv3×3 stem to nf
  (ours: gives the outermost skip nf channels) → pix2pix U-Net of
  ``n_scales`` levels (channels ``min(nf·2^i, max_nf)``) → head Conv1×1 + BN → ReLU → ReflPad 3,
  Conv7×7 → 1 → sigmoid = the soft mask z ∈ (0, 1).

  Attributes:
    nf: width (reference 32). max_nf: cap (reference 128). n_scales: levels (reference 7;
    H, W divisible by 2^n_scales). dtype: computation dtype.

  ``__call__(generated [B,H,W,3], warped [B,H,W,3], flow [B,H,W,2], vis int [B,H,W], train)`` →
  z ``[B,H,W,1]`` float32 in (0, 1).
  """

  nf: int = 32
  max_nf: int = 128
  n_scales: int = 7
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, generated, warped, flow, vis, train: bool = True):
    b, h, w, _ = generated.shape
    _check_divisible(h, w, 2 ** self.n_scales, "pixel_warp_model.n_scales: 2**n_scales")
    x = jnp.concatenate([generated, warped, vis[..., None].astype(jnp.float32),
                         flow / FLOW_SCALE], -1).astype(self.dtype)
    x = _conv(self.nf, 3, dtype=self.dtype, name="stem")(x)
    channels = [min(self.nf * 2 ** (i + 1), self.max_nf) for i in range(self.n_scales)]
    feat = Pix2PixUNet(channels, self.dtype, name="unet")(x, train)[0]
    z = nn.relu(_bn(train, self.dtype, "head_bn")(_conv(self.nf, 1, dtype=self.dtype, name="head")(feat)))
    z = nn.Conv(1, (7, 7), padding="VALID", kernel_init=kaiming, dtype=self.dtype, name="out")(
        layers.reflect_pad(z, 3))
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
  PixelWarpNet, 'disc': PatchDiscriminator}``.
  """
  f, g, p, d = config.flow_model, config.model, config.pixel_warp_model, config.disc
  return {
      "flow": FlowRegressionNet(f.nf, f.max_nf, f.n_levels, dtype),
      "generator": DualUNetGenerator(g.nf, g.max_nf, g.n_scales, g.n_warp_scales, g.n_res_blocks, dtype),
      "pixel_warp": PixelWarpNet(p.nf, p.max_nf, p.n_scales, dtype),
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


def generate(models: dict[str, nn.Module], nets: dict[str, dict], batch: dict) -> dict[str, jax.Array]:
  """DIAF inference with the networks present in ``nets`` (running BN averages), DIAF §3.2–3.5.

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
    out["generated"] = models["generator"].apply(nets["generator"], batch["source_image"], batch["target_pose"],
                                                 flow, vis, train=False)
    if "pixel_warp" in nets:
      z = models["pixel_warp"].apply(nets["pixel_warp"], out["generated"], out["warped"], flow, vis, train=False)
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

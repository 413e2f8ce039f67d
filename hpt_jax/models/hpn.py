"""HPN: the progressive encoder-decoder and the local discriminator (HPN §3).

Paper: Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training", arXiv:2008.11898
(2020). No public code exists for HPN; everything below is read from the paper
(§3.1 autoencoder, §3.2 local descriptors, §3.3 progressive training, §3.4 implementation details,
Figs. 3, 5, 6). Where the paper is silent the choice is stated.

**Levels and sizes.** A level is an image size (H, W); level ``l`` has size ``base · 2**l``. The
bottleneck is ``base / 2`` (32×32 for the paper's 64² base; 32×22 for DeepFashion's 64×44 base:
we use *rectangular levels*, 64×44 → 128×88 → 256×176, rather than padding the 176-wide images
to squares, so no capacity goes to white padding and boxes/metrics see the real frame).

**Channels.** "The number of channels of feature maps is halved as spatial size doubles", with
1024 channels at the 32² bottleneck (§3.4): a feature map of height ``h`` has
``channels_at(h) = max(min_channels, bottleneck_channels · bottleneck_h / h)`` channels
(32→1024, 64→512, 128→256, 256→128, 512→64, 1024→32). Because this depends on ``h`` only, a block
keeps its shapes when the network grows, so its weights carry over.

**Generator** (``HPNGenerator``), for a level of height H::

    from_rgb_HxW   1×1 conv, 3 → channels_at(2H)                 (replaced at every level)
    enc_hxw        for h = H, H/2, …, 2·Hb: ConvBlock(channels_at(h)); skip saved; 2×2 avg-pool
    enc_bottleneck ConvBlock(channels_at(Hb)) at Hb×Wb (the 1024-channel bottleneck feature)
    ‖ P            concat the 18 target-pose Gaussian maps rendered on the Hb×Wb grid
    dec_bottleneck ConvBlock(channels_at(Hb))
    dec_hxw        for h = 2·Hb, …, H: nearest ×2 up-sample, concat skip enc_hxw, ConvBlock(channels_at(h))
    to_rgb_HxW     1×1 conv, channels_at(H) → 3, tanh               (replaced at every level)

``ConvBlock`` = 2 × [3×3 conv (zero 'SAME' padding, no bias: BN follows) → BatchNorm → LeakyReLU
0.2] (§3.4). He-normal initialisation (§3.4; fan-in, gain √2, untruncated as PyTorch's
``kaiming_normal_``). BatchNorm: momentum 0.9 in flax terms (= PyTorch's default 0.1), ε 1e-5;
in training mode the statistics are over the whole global batch (under ``jax.jit`` with the batch
sharded the mean is a global reduction). The tanh output (images in [-1, 1]) and the linear
from-RGB projection are our choices; the paper says only "1×1 convolution to project … RGB".

**Pose input.** The paper concatenates the 18 Gaussian maps P (Eq. 1, σ = 3.2) "into the
bottleneck" and does not say at which resolution σ is measured. We render P directly on the
bottleneck grid with σ = 3.2 pixels *of the first (64-high) level* = 1.6 bottleneck cells, the same
at every level: the bottleneck input then does not change when the network grows (in image pixels
σ scales with the level: 3.2 at 64², 6.4 at 128², …, 51.2 at 1024²). See :func:`pose_maps_on_grid`.

**Local discriminator** (§3.2, Fig. 6): strided 4×4 convolutions (LeakyReLU 0.2, no
normalisation) down to a 2×2×1 map that is averaged to one logit per region. One network is
shared by all regions (the paper's "local discriminators at the d-th region" could be separate
networks; sharing keeps the parameter count independent of N).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpt_jax import errors

Dtype = Any

#: He-normal (fan-in, gain √2, plain normal) — PyTorch ``kaiming_normal_`` defaults.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def level_sizes(base_size: Sequence[int], num_levels: int) -> tuple[tuple[int, int], ...]:
  """Image sizes of the levels: ``base · 2**l`` for l < num_levels, as (H, W) int tuples.

  Raises:
    ValueError: base H or W odd (the bottleneck is base / 2), or num_levels < 1.
  """
  h, w = (int(s) for s in base_size)
  if h % 2 or w % 2 or h < 2 or w < 2:
    raise errors.ConfigError(f"model.base_size={tuple(base_size)}: both sides must be even (bottleneck = base / 2)")
  if num_levels < 1:
    raise errors.ConfigError(f"model.num_levels={num_levels} must be >= 1")
  return tuple((h * 2 ** l, w * 2 ** l) for l in range(num_levels))


def channels_at(height: int, bottleneck_channels: int, bottleneck_height: int,
                min_channels: int = 1) -> int:
  """Feature channels at feature-map height ``height`` (halved per doubling, §3.4)."""
  return max(min_channels, bottleneck_channels * bottleneck_height // height)


def pose_maps_on_grid(keypoints: jax.Array, image_size: Sequence[int], grid_size: Sequence[int],
                      sigma_cells: float) -> jax.Array:
  """Gaussian pose maps P (HPN Eq. 1) rendered on the bottleneck grid, in JAX.

  Keypoints are mapped from the ``image_size`` image to the grid with the pixel-centre convention
  of :func:`hpt_jax.pose.resize_keypoints` (``y' = (y + 0.5)·Hb/H − 0.5``, clipped to the grid,
  so it equals ``keypoints_to_heatmaps(resize_keypoints(...))``); a missing joint (either
  coordinate −1) gives an all-zero map.

  Args:
    keypoints: float ``[B, 18, 2]`` (y, x) pixels of the level image, −1 = missing.
    image_size: (H, W) of the level image, pixels.
    grid_size: (Hb, Wb) of the bottleneck.
    sigma_cells: Gaussian std in bottleneck cells.

  Returns:
    float32 ``[B, Hb, Wb, 18]`` in [0, 1] (peak 1 at a joint lying on a cell centre).
  """
  (h, w), (hb, wb) = image_size, grid_size
  kp = keypoints.astype(jnp.float32)
  present = jnp.all(kp != -1.0, axis=-1)                                   # [B, 18]
  scale = jnp.array([hb / h, wb / w], jnp.float32)
  g = jnp.clip((kp + 0.5) * scale - 0.5, 0.0, jnp.array([hb - 1, wb - 1], jnp.float32))  # [B, 18, 2]
  yy = jnp.arange(hb, dtype=jnp.float32)[None, :, None, None]
  xx = jnp.arange(wb, dtype=jnp.float32)[None, None, :, None]
  d2 = (yy - g[:, None, None, :, 0]) ** 2 + (xx - g[:, None, None, :, 1]) ** 2
  maps = jnp.exp(-d2 / (2.0 * sigma_cells ** 2))
  return jnp.where(present[:, None, None, :], maps, 0.0)


class ConvBlock(nn.Module):
  """2 × [3×3 conv → BatchNorm → LeakyReLU 0.2] (HPN §3.4), NHWC, ``features`` output channels."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(2):
      x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, kernel_init=he_normal,
                  dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                       name=f"bn{i}")(x)
      x = nn.leaky_relu(x, 0.2)
    return x


def _name(h: int, w: int) -> str:
  return f"{h}x{w}"


class HPNGenerator(nn.Module):
  """The HPN encoder-decoder at one level (module docstring has the layer list).

  Attributes:
    image_size: (H, W) of this level; H / bottleneck H must be a power of two ≥ 2.
    bottleneck_size: (Hb, Wb), the 32×32 (or 32×22) bottleneck; fixed across levels.
    bottleneck_channels: channels at the bottleneck (paper: 1024).
    min_channels: lower bound on any block's channels (1 = the paper's halving rule unchanged).
    dtype: computation dtype (params stay float32).

  Parameter names: ``from_rgb_HxW``, ``enc_hxw`` / ``dec_hxw`` for every feature height h,
  ``enc_bottleneck``, ``dec_bottleneck``, ``to_rgb_HxW``; so :func:`grow_params` can carry
  everything but the RGB projections to the next level.
  """

  image_size: tuple[int, int]
  bottleneck_size: tuple[int, int]
  bottleneck_channels: int = 1024
  min_channels: int = 1
  dtype: Dtype = jnp.float32

  def feature_sizes(self) -> list[tuple[int, int]]:
    """Sizes with an encoder/decoder block, from the level size down to 2× the bottleneck."""
    (h, w), (hb, wb) = self.image_size, self.bottleneck_size
    ratio = h // hb
    if h % hb or w % wb or ratio < 2 or ratio & (ratio - 1) or w // wb != ratio:
      raise errors.ConfigError(f"image size {tuple(self.image_size)} must be 2**k · bottleneck "
                       f"{tuple(self.bottleneck_size)} with k >= 1")
    sizes = []
    while h > hb:
      sizes.append((h, w))
      h, w = h // 2, w // 2
    return sizes

  def _channels(self, h: int) -> int:
    return channels_at(h, self.bottleneck_channels, self.bottleneck_size[0], self.min_channels)

  @nn.compact
  def __call__(self, source_image: jax.Array, pose_maps: jax.Array, train: bool) -> jax.Array:
    """Generates the target image.

    Args:
      source_image: float ``[B, H, W, 3]`` in [-1, 1], the reference image X.
      pose_maps: float ``[B, Hb, Wb, 18]`` target-pose maps P on the bottleneck grid
        (:func:`pose_maps_on_grid`).
      train: BatchNorm uses (and updates, with ``mutable=['batch_stats']``) batch statistics.

    Returns:
      float32 ``[B, H, W, 3]`` in [-1, 1] (tanh), the generated image X̂.

    Raises:
      ValueError: input shapes that do not match ``image_size``/``bottleneck_size``.
    """
    sizes = self.feature_sizes()
    (h, w) = self.image_size
    if source_image.shape[1:] != (h, w, 3):
      raise ValueError(f"source_image {source_image.shape} does not match level size {h}x{w}")
    if pose_maps.shape[1:3] != tuple(self.bottleneck_size):
      raise ValueError(f"pose_maps {pose_maps.shape} do not match bottleneck {self.bottleneck_size}")
    x = nn.Conv(self._channels(2 * h), (1, 1), kernel_init=he_normal, dtype=self.dtype,
                name=f"from_rgb_{_name(h, w)}")(source_image.astype(self.dtype))
    skips = []
    for (fh, fw) in sizes:
      x = ConvBlock(self._channels(fh), self.dtype, name=f"enc_{_name(fh, fw)}")(x, train)
      skips.append(x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = ConvBlock(self.bottleneck_channels, self.dtype, name="enc_bottleneck")(x, train)
    x = jnp.concatenate([x, pose_maps.astype(x.dtype)], axis=-1)
    x = ConvBlock(self.bottleneck_channels, self.dtype, name="dec_bottleneck")(x, train)
    for (fh, fw), skip in zip(reversed(sizes), reversed(skips)):
      b, sh, sw, c = x.shape
      x = jax.image.resize(x, (b, 2 * sh, 2 * sw, c), method="nearest")
      x = jnp.concatenate([x, skip], axis=-1)
      x = ConvBlock(self._channels(fh), self.dtype, name=f"dec_{_name(fh, fw)}")(x, train)
    x = nn.Conv(3, (1, 1), kernel_init=he_normal, dtype=self.dtype, name=f"to_rgb_{_name(h, w)}")(x)
    return jnp.tanh(x.astype(jnp.float32))


def is_rgb_projection(name: str) -> bool:
  """True for the per-level from/to-RGB layers that are replaced when a level is added (§3.3)."""
  return name.startswith("from_rgb_") or name.startswith("to_rgb_")


def grow_params(old: dict, new: dict) -> tuple[dict, list[str], list[str]]:
  """Carries a trained level's weights into the next level's freshly initialised tree (§3.3).

  Every top-level entry of ``old`` except the RGB projections is copied into ``new`` (all earlier
  layers stay, and stay trainable; no alpha fade-in); entries only in ``new`` (the new encoder and
  decoder blocks and the new RGB projections) keep their fresh initialisation. Works for
  ``params`` and ``batch_stats`` alike.

  Args:
    old: ``{layer name: subtree}`` of the finished level.
    new: ``{layer name: subtree}`` initialised at the next level.

  Returns:
    ``(grown, carried, added)``: the merged tree and the sorted names carried over / newly added.

  Raises:
    ValueError: a carried layer's shapes differ (a config changed between levels).
  """
  grown = dict(new)
  carried = []
  for name, subtree in old.items():
    if is_rgb_projection(name):
      continue
    if name not in new:
      raise ValueError(f"layer {name!r} of the previous level is missing at the new level")
    old_shapes = jax.tree.map(lambda a: a.shape, subtree)
    new_shapes = jax.tree.map(lambda a: a.shape, new[name])
    if old_shapes != new_shapes:
      raise ValueError(f"layer {name!r} changed shape between levels: {old_shapes} vs {new_shapes}")
    grown[name] = subtree
    carried.append(name)
  added = sorted(set(new) - set(carried))
  return grown, sorted(carried), added


class LocalDiscriminator(nn.Module):
  """HPN local discriminator (§3.2, Fig. 6): (reference crop ‖ candidate crop) → one logit.

  ``n = max(1, floor(log2(side / 2)))`` 4×4 stride-2 convolutions (channels ``ndf · min(2**i, 8)``,
  LeakyReLU 0.2) bring a ``side × side`` crop to 2×2 (Fig. 6's last 2×2 map for side = 2**(n+1));
  a 3×3 conv to 1 channel follows and the map is averaged to a scalar logit (sigmoid = the
  probability that the pair is a valid transfer).

  Attributes:
    ndf: channels of the first conv.
    dtype: computation dtype.
  """

  ndf: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, reference_crops: jax.Array, candidate_crops: jax.Array) -> jax.Array:
    """Scores crop pairs.

    Args:
      reference_crops, candidate_crops: float ``[M, s, s, 3]`` in [-1, 1] (M = batch × regions).

    Returns:
      float32 ``[M]`` logits.
    """
    x = jnp.concatenate([reference_crops, candidate_crops], axis=-1).astype(self.dtype)
    side = x.shape[1]
    n = max(1, int(math.floor(math.log2(max(side, 2) / 2))))
    for i in range(n):
      x = nn.Conv(self.ndf * min(2 ** i, 8), (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  kernel_init=nn.initializers.normal(0.02), dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.leaky_relu(x, 0.2)
    x = nn.Conv(1, (3, 3), padding="SAME", kernel_init=nn.initializers.normal(0.02), dtype=self.dtype,
                name="logit")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))


def crop_regions(images: jax.Array, boxes: jax.Array, side: int) -> jax.Array:
  """Cuts fixed-size square regions out of a batch of images (local descriptors, §3.2).

  Args:
    images: ``[B, H, W, C]``.
    boxes: int ``[B, N, 4]`` (y0, x0, y1, x1) from :func:`hpt_jax.pose.local_descriptor_boxes`;
      only (y0, x0) is used — every box is ``side × side`` and lies inside the image.
    side: the box side in pixels (static).

  Returns:
    ``[B, N, side, side, C]``, same dtype as ``images``.
  """
  c = images.shape[-1]

  def one(image, box):
    return jax.lax.dynamic_slice(image, (box[0], box[1], 0), (side, side, c))

  return jax.vmap(lambda image, bxs: jax.vmap(lambda b: one(image, b))(bxs))(images, boxes)


class Level(NamedTuple):
  """One progressive level of a config: its image size, bottleneck grid and pose-map σ.

  Attributes:
    index: level index in ``[0, model.num_levels)``.
    image_size: (H, W) pixels of the level image (``model.base_size · 2**index``).
    bottleneck_size: (Hb, Wb) = ``model.base_size / 2`` (the same at every level).
    sigma_cells: pose-map σ on the bottleneck grid, ``pose.sigma · Hb / H_0`` cells (the same at
      every level; see the module docstring).
  """

  index: int
  image_size: tuple[int, int]
  bottleneck_size: tuple[int, int]
  sigma_cells: float

  @property
  def name(self) -> str:
    """``level_<H>x<W>``, the checkpoint folder name."""
    return f"level_{self.image_size[0]}x{self.image_size[1]}"


def level(config, index: int) -> Level:
  """The :class:`Level` ``index`` of a ``hpt_jax/configs/deepfashion_hpn.py`` / ``hpn_1024.py`` config.

  Negative indices count from the last level (−1 = the final one).

  Raises:
    ValueError: index outside the config's levels, or a bad ``model.base_size``/``num_levels``.
  """
  sizes = level_sizes(config.model.base_size, config.model.num_levels)
  i = index + len(sizes) if index < 0 else index
  if not 0 <= i < len(sizes):
    raise errors.ConfigError(f"level {index} outside [0, {len(sizes)}) (model.num_levels={len(sizes)}: {sizes})")
  base = tuple(int(s) for s in config.model.base_size)
  bottleneck = (base[0] // 2, base[1] // 2)
  return Level(i, sizes[i], bottleneck, float(config.pose.sigma) * bottleneck[0] / base[0])


def build_generator(config, lvl: Level, dtype: Dtype = jnp.float32) -> "HPNGenerator":
  """The :class:`HPNGenerator` of level ``lvl`` from ``config.model``."""
  m = config.model
  return HPNGenerator(lvl.image_size, lvl.bottleneck_size, m.bottleneck_channels, m.min_channels, dtype)


def generate(generator: "HPNGenerator", lvl: Level, variables: dict, batch: dict) -> jax.Array:
  """HPN inference at one level (BatchNorm running statistics).

  Args:
    generator: :func:`build_generator` of ``lvl``.
    lvl: the level.
    variables: ``{'params': …, 'batch_stats': …}`` of the generator.
    batch: ``source_image`` float ``[B, H, W, 3]`` in [-1, 1] at the level size and
      ``target_keypoints`` float ``[B, 18, 2]`` (y, x) level pixels, −1 = missing.

  Returns:
    float32 ``[B, H, W, 3]`` in [-1, 1] (tanh output).
  """
  maps = pose_maps_on_grid(batch["target_keypoints"], lvl.image_size, lvl.bottleneck_size, lvl.sigma_cells)
  return generator.apply(variables, batch["source_image"], maps, False)

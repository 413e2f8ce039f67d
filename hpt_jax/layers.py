"""Building blocks shared by the generators and discriminators (NHWC, Flax Linen).

All layers compute in ``dtype`` (float32 or bfloat16) and keep parameters in ``param_dtype``
(float32). Normalisation statistics are always reduced in float32.

Sources: PyTorch modules of PATN (tengteng95/Pose-Transfer @ 281ee2d ``models/networks.py``) and
of the RATE-Net code (Lotayou/Pose-Transfer @ 164c91b, branch ``rate_net``:
``models/model_variants_v2.py``, ``models/networks.py`` and FUNIT's
``models/FUNIT_module/blocks.py``). PyTorch's ``Conv2dBlock`` order is pad → conv → norm → act.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpt_jax import errors

Dtype = Any

# PATN's ``init_weights(net, 'normal')``: N(0, 0.02) for conv kernels, zero bias.
patn_normal_init = nn.initializers.normal(stddev=0.02)
# PyTorch's default Conv2d/Linear init (kaiming_uniform with a=sqrt(5)) is U(±1/sqrt(fan_in)),
# i.e. variance 1/(3·fan_in). Biases are zero here (PyTorch draws them from the same range);
# the difference only affects the first steps.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def get_init(name: str) -> Callable:
  """Returns a kernel initialiser by name: ``'normal0.02'`` (PATN) or ``'torch_default'``.

  Raises:
    ValueError: an unknown name.
  """
  if name == "normal0.02":
    return patn_normal_init
  if name == "torch_default":
    return torch_default_init
  raise errors.ConfigError(f"unknown initialiser {name!r}; expected 'normal0.02' or 'torch_default'")


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation following a normalisation layer.

  ``'relu'`` is the reference code's choice; ``'leaky_relu'`` is the DRN paper's
  (§V "Implementation Details": LeakyReLU with negative slope 0.2 after each normalisation).

  Raises:
    ValueError: an unknown name.
  """
  if name == "relu":
    return nn.relu
  if name == "leaky_relu":
    return functools.partial(nn.leaky_relu, negative_slope=0.2)
  raise errors.ConfigError(f"unknown activation {name!r}; expected 'relu' or 'leaky_relu'")


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflect-pads the two spatial axes of ``x`` [B, H, W, C] by ``pad`` pixels (PyTorch ReflectionPad2d)."""
  if pad == 0:
    return x
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Instance normalisation without affine parameters (PyTorch ``InstanceNorm2d(affine=False)``).

  Args:
    x: [B, H, W, C] features, any float dtype.
    eps: added to the biased per-sample, per-channel variance.

  Returns:
    [B, H, W, C] in ``x.dtype``; statistics are computed in float32.
  """
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def adain(x: jax.Array, gamma: jax.Array, beta: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Adaptive instance normalisation, DRN Eq. (4): ``gamma · (x − μ)/σ + beta``.

  Args:
    x: [B, H, W, C] features.
    gamma: [B, C] scale ``s_w`` used raw (no +1), as FUNIT's ``AdaptiveInstanceNorm2d`` does.
    beta: [B, C] bias ``s_b``.
    eps: added to the biased variance.

  Returns:
    [B, H, W, C] in ``x.dtype``.
  """
  normed = instance_norm(x, eps).astype(jnp.float32)
  out = normed * gamma[:, None, None, :].astype(jnp.float32) + beta[:, None, None, :].astype(jnp.float32)
  return out.astype(x.dtype)


class Conv(nn.Module):
  """Convolution with explicit padding mode, NHWC.

  Attributes:
    features: output channels.
    kernel: square kernel size in pixels.
    stride: stride in pixels.
    padding: pixels of padding on each side (PyTorch ``padding``).
    pad_mode: ``'reflect'`` (ReflectionPad2d before a padding-0 conv) or ``'zero'``.
    use_bias: add a bias.
    kernel_init: kernel initialiser.
  """

  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  pad_mode: str = "reflect"
  use_bias: bool = True
  kernel_init: Callable = torch_default_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, Cin] → [B, H', W', features] with H' = (H + 2·padding − kernel)//stride + 1."""
    if self.pad_mode == "reflect":
      x = reflect_pad(x, self.padding)
      padding = "VALID"
    elif self.pad_mode == "zero":
      padding = [(self.padding, self.padding)] * 2
    else:
      raise ValueError(f"unknown pad_mode {self.pad_mode!r}")
    return nn.Conv(
        self.features,
        (self.kernel, self.kernel),
        strides=(self.stride, self.stride),
        padding=padding,
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="conv",
    )(x)


def upsample(x: jax.Array, method: str) -> jax.Array:
  """Doubles the spatial size of ``x`` [B, H, W, C].

  ``method='bilinear'`` matches PyTorch ``Upsample(scale_factor=2, mode='bilinear')`` with
  ``align_corners=False`` (half-pixel centres); ``'nearest'`` matches ``mode='nearest'``.
  """
  b, h, w, c = x.shape
  if method == "nearest":
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method=method, antialias=False).astype(x.dtype)

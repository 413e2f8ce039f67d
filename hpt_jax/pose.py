"""OpenPose-18 keypoints: pose heatmaps, horizontal flip, validation (pure numpy).

Conventions used throughout hpt-jax:

* Keypoints are a float32 array ``[18, 2]`` (or ``[..., 18, 2]`` where stated) in ``(y, x)`` =
  (row, column) pixel order of the image they belong to, in OpenPose-18 joint order
  (:data:`JOINT_NAMES`). A missing joint is ``(-1, -1)`` (:data:`MISSING`); a joint with either
  coordinate equal to -1 counts as missing, as in PATN's ``tool/generate_pose_map_fashion.py``.
* Pose heatmaps are float32 ``[H, W, 18]`` in ``[0, 1]``.

Sources: PATN (tengteng95/Pose-Transfer) ``tool/generate_pose_map_fashion.py`` and
``data/keypoint.py``; RATE-Net (Lotayou/Pose-Transfer, branch rate_net) ``data/keypoint_funit.py``
for the flip with the left/right channel swap; ARCHITECTURES.md §1.1 and §2.1.

This module imports only numpy, so it works where TensorFlow and JAX are absent.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 18

#: OpenPose-18 joint names, in channel order (ARCHITECTURES.md §2.1; data/README.md).
JOINT_NAMES = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)

#: Channel permutation that swaps left and right joints after a horizontal flip: joint ``k`` of the
#: flipped pose is joint ``FLIP_PERMUTATION[k]`` of the mirrored original. It is its own inverse.
#: Source: RATE-Net ``data/keypoint_funit.py`` (ARCHITECTURES.md §1.1).
FLIP_PERMUTATION = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

#: Coordinate value marking a missing joint (PATN annotation CSVs use -1).
MISSING = -1.0

assert len(JOINT_NAMES) == NUM_JOINTS == len(FLIP_PERMUTATION)


def present_mask(keypoints: np.ndarray) -> np.ndarray:
  """Returns which joints are present.

  Args:
    keypoints: ``[..., 18, 2]`` (y, x) keypoints, -1 = missing.

  Returns:
    bool ``[..., 18]``: True where neither coordinate equals -1 (PATN's missing-value test in
    ``tool/generate_pose_map_fashion.py``).
  """
  keypoints = np.asarray(keypoints)
  return np.all(keypoints != MISSING, axis=-1)


def keypoints_to_heatmaps(keypoints: np.ndarray, height: int, width: int,
                          sigma: float) -> np.ndarray:
  """Renders one Gaussian heatmap per joint.

  Channel ``k`` is ``exp(-((y - y_k)^2 + (x - x_k)^2) / (2 sigma^2))`` evaluated at the integer
  pixel centres ``y in [0, H)``, ``x in [0, W)``; it equals 1.0 at a keypoint with integer
  coordinates and is all zeros for a missing joint. Keypoints may be fractional and may lie outside
  the image (the Gaussian is simply evaluated on the grid). The Gaussian is separable, so it is
  computed as an outer product of 1-D profiles (vectorised numpy, no JAX).

  Encoding choice (ARCHITECTURES.md §2.1, §5): PATN's ``tool/generate_pose_map_fashion.py`` (and
  RATE-Net, which reuses it) computes this sigma=6 Gaussian but stores the map as ``uint8``, so
  every value below 1 truncates to 0 and each channel becomes a **one-pixel map** (1 at the
  keypoint, 0 elsewhere; see menyifang/ADGAN#12). We deliberately use the **true float Gaussian**
  instead. Networks trained on one encoding see a different input distribution under the other, so
  **checkpoints do not transfer between the two encodings** (e.g. converted PATN/RATE-Net weights).

  Args:
    keypoints: float ``[18, 2]`` or batched ``[..., 18, 2]`` (y, x) pixel coordinates, -1 = missing.
    height: H, image height in pixels (> 0).
    width: W, image width in pixels (> 0).
    sigma: Gaussian standard deviation in pixels (> 0); PATN uses 6 at 256×176.

  Returns:
    float32 ``[..., H, W, 18]`` heatmaps in ``[0, 1]``.

  Raises:
    ValueError: keypoints not of shape ``[..., 18, 2]``, non-positive size or sigma.
  """
  keypoints = np.asarray(keypoints, dtype=np.float32)
  if keypoints.ndim < 2 or keypoints.shape[-2:] != (NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape [..., {NUM_JOINTS}, 2], got {keypoints.shape}")
  if height <= 0 or width <= 0:
    raise ValueError(f"height and width must be positive, got {height}x{width}")
  if not sigma > 0:
    raise ValueError(f"sigma must be positive, got {sigma}")
  present = present_mask(keypoints)                                     # [..., 18]
  inv = np.float32(1.0 / (2.0 * sigma * sigma))
  ys = np.arange(height, dtype=np.float32)
  xs = np.arange(width, dtype=np.float32)
  # 1-D profiles [..., 18, H] and [..., 18, W]; a missing joint gets an all-zero row profile.
  gy = np.exp(-np.square(ys - keypoints[..., 0:1]) * inv)
  gx = np.exp(-np.square(xs - keypoints[..., 1:2]) * inv)
  gy = np.where(present[..., None], gy, np.float32(0.0))
  heatmaps = np.einsum("...kh,...kw->...hwk", gy, gx)
  return heatmaps.astype(np.float32, copy=False)


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
  """Mirrors keypoints for a horizontally flipped image and swaps left/right joints.

  Present joints get ``x' = width - 1 - x`` (``y`` unchanged; the mirror of pixel column ``x`` in
  ``np.flip(image, axis=1)``); missing joints stay ``(-1, -1)``. Then joints are reordered by
  :data:`FLIP_PERMUTATION`, so e.g. the left wrist of the result is the mirrored right wrist of the
  input. Flipping twice returns the input. Consistent with
  ``keypoints_to_heatmaps(flip_keypoints(k, W), H, W, s) ==
  np.flip(keypoints_to_heatmaps(k, H, W, s), axis=1)[..., FLIP_PERMUTATION]``.
  Source: RATE-Net ``data/keypoint_funit.py`` (ARCHITECTURES.md §1.1; PATN's optional flip does not
  swap channels, §2.1).

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) pixel coordinates, -1 = missing.
    width: W, width in pixels of the image the keypoints belong to.

  Returns:
    float32 ``[..., 18, 2]`` flipped keypoints (a new array).

  Raises:
    ValueError: keypoints not of shape ``[..., 18, 2]``.
  """
  keypoints = np.asarray(keypoints, dtype=np.float32)
  if keypoints.ndim < 2 or keypoints.shape[-2:] != (NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape [..., {NUM_JOINTS}, 2], got {keypoints.shape}")
  present = present_mask(keypoints)
  mirrored = keypoints.copy()
  mirrored[..., 1] = np.where(present, np.float32(width - 1) - keypoints[..., 1], MISSING)
  mirrored[..., 0] = np.where(present, keypoints[..., 0], MISSING)
  return mirrored[..., FLIP_PERMUTATION, :]


def resize_keypoints(keypoints: np.ndarray, from_size: tuple[int, int],
                     to_size: tuple[int, int]) -> np.ndarray:
  """Maps keypoints from an image of ``from_size`` to the same image resized to ``to_size``.

  Uses the pixel-centre convention of a full-image resize (PIL, ``jax.image.resize``):
  ``y' = (y + 0.5) * H'/H - 0.5`` (same for x with W), clipped to ``[0, H'-1] x [0, W'-1]`` so a
  joint inside the source image stays inside the resized one. Missing joints stay ``(-1, -1)``.
  (PATN's ``tool/resize_fashion.py`` rescales integer coordinates as ``int(v * ratio)``; we keep
  float precision.)

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) pixel coordinates in the ``from_size`` image.
    from_size: (H, W) of the image the keypoints belong to, pixels.
    to_size: (H', W') of the resized image, pixels.

  Returns:
    float32 ``[..., 18, 2]`` keypoints in the ``to_size`` image (a new array).
  """
  keypoints = np.asarray(keypoints, dtype=np.float32)
  (h0, w0), (h1, w1) = from_size, to_size
  scale = np.array([h1 / h0, w1 / w0], dtype=np.float32)
  upper = np.array([h1 - 1, w1 - 1], dtype=np.float32)
  resized = np.clip((keypoints + 0.5) * scale - 0.5, 0.0, upper)
  return np.where(present_mask(keypoints)[..., None], resized, np.float32(MISSING)).astype(np.float32)


def validate_keypoints(keypoints: np.ndarray, height: int, width: int) -> None:
  """Checks a keypoint array against the conventions of this module.

  Args:
    keypoints: ``[18, 2]`` (y, x) pixel coordinates, -1 = missing.
    height: H, image height in pixels.
    width: W, image width in pixels.

  Returns:
    None.

  Raises:
    ValueError: shape is not ``(18, 2)``, a value is not finite, or a present joint lies outside
      ``[0, H) x [0, W)`` (the message names the joint).
  """
  keypoints = np.asarray(keypoints)
  if keypoints.shape != (NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape ({NUM_JOINTS}, 2), got {keypoints.shape}")
  if not np.all(np.isfinite(keypoints)):
    raise ValueError("keypoints contain NaN or infinite values")
  present = present_mask(keypoints)
  y, x = keypoints[:, 0], keypoints[:, 1]
  outside = present & ((y < 0) | (y >= height) | (x < 0) | (x >= width))
  if np.any(outside):
    k = int(np.argmax(outside))
    raise ValueError(f"joint {k} ({JOINT_NAMES[k]}) at (y={y[k]:g}, x={x[k]:g}) lies outside the "
                     f"{height}x{width} image")


# TODO(HPN): `local_descriptor_points(keypoints, ...)` — points interpolated along limbs for HPN's
# local descriptors (arXiv 2008.11898; no public code, ARCHITECTURES.md §4). Not implemented yet.

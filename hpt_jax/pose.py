"""OpenPose-18 keypoints: pose heatmaps, horizontal flip, validation (pure numpy).

Conventions used throughout hpt-jax:

* Keypoints are a float32 array ``[18, 2]`` (or ``[..., 18, 2]`` where stated) in ``(y, x)`` =
  (row, column) pixel order of the image they belong to, in OpenPose-18 joint order
  (:data:`JOINT_NAMES`). A missing joint is ``(-1, -1)`` (:data:`MISSING`); a joint with either
  coordinate equal to -1 counts as missing, as in PATN's ``tool/generate_pose_map_fashion.py``.
* Pose heatmaps are float32 ``[H, W, 18]`` in ``[0, 1]``.

Sources: PATN (Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation",
CVPR 2019, arXiv:1904.03349; code tengteng95/Pose-Transfer @ 281ee2d)
``tool/generate_pose_map_fashion.py`` and ``data/keypoint.py``; RATE-Net (Yang et al.,
"Region-Adaptive Texture Enhancement for Detailed Person Image Synthesis", ICME 2020,
arXiv:2005.12486; code Lotayou/Pose-Transfer @ 164c91b, branch rate_net) ``data/keypoint_funit.py``
for the flip with the left/right channel swap; HPN (Liu et al., "Pose-Guided High-Resolution
Appearance Transfer via Progressive Training", arXiv:2008.11898, 2020) §3.2 and §3.4 for the local
descriptors.

This module imports only numpy, so it works where TensorFlow and JAX are absent.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 18

#: OpenPose-18 joint names, in channel order (as in PATN's annotation CSVs; hpt_jax/data/README.md).
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
#: Source: RATE-Net ``data/keypoint_funit.py``.
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


def interpolate_poses(keyframes: np.ndarray, steps: int) -> np.ndarray:
  """A pose sequence through key poses, for pose-guided animation (e.g. a GIF of transfer results).

  Between each two consecutive key poses, ``steps`` frames move every joint linearly, the first
  being the earlier key pose; the last key pose ends the sequence. A joint missing in either key
  pose is missing (-1) in the frames between them.

  Args:
    keyframes: float ``[K, 18, 2]`` (y, x) keypoints, -1 = missing, K >= 1.
    steps: frames per interval (>= 1; 1 returns the key poses).

  Returns:
    float32 ``[(K - 1) * steps + 1, 18, 2]``.

  Raises:
    ValueError: ``keyframes`` is not ``[K, 18, 2]`` with K >= 1, or ``steps`` < 1.
  """
  kf = np.asarray(keyframes, np.float32)
  if kf.ndim != 3 or kf.shape[1:] != (NUM_JOINTS, 2) or not len(kf):
    raise ValueError(f"keyframes must be [K, {NUM_JOINTS}, 2] with K >= 1, got {kf.shape}")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  frames = []
  for a, b in zip(kf[:-1], kf[1:]):
    both = (present_mask(a) & present_mask(b))[:, None]
    for t in np.arange(steps, dtype=np.float32) / np.float32(steps):
      frames.append(np.where(both, a + t * (b - a), np.float32(MISSING)) if t > 0 else a)
  frames.append(kf[-1])
  return np.stack(frames).astype(np.float32)


#: Heatmap encodings (``config.pose.encoding``): the float Gaussian, or PATN's stored one-pixel maps.
ENCODINGS = ("gaussian", "one_pixel")


def keypoints_to_heatmaps(keypoints: np.ndarray, height: int, width: int,
                          sigma: float, encoding: str = "gaussian") -> np.ndarray:
  """Renders one Gaussian heatmap per joint.

  Channel ``k`` is ``exp(-((y - y_k)^2 + (x - x_k)^2) / (2 sigma^2))`` evaluated at the integer
  pixel centres ``y in [0, H)``, ``x in [0, W)``; it equals 1.0 at a keypoint with integer
  coordinates and is all zeros for a missing joint. Keypoints may be fractional and may lie outside
  the image (the Gaussian is simply evaluated on the grid). The Gaussian is separable, so it is
  computed as an outer product of 1-D profiles (vectorised numpy, no JAX).

  Encoding choice: PATN's ``tool/generate_pose_map_fashion.py`` (and
  RATE-Net, which reuses it) computes this sigma=6 Gaussian but stores the map as ``uint8``, so
  every value below 1 truncates to 0 and each channel becomes a **one-pixel map** (1 at the
  keypoint, 0 elsewhere; see menyifang/ADGAN#12). We deliberately use the **true float Gaussian**
  instead. Networks trained on one encoding see a different input distribution under the other, so
  **checkpoints do not transfer between the two encodings**. ``encoding='one_pixel'`` reproduces
  the stored maps for PATN's released DeepFashion weights (``config.pose.encoding``): channel ``k``
  is 1 at the pixel nearest the keypoint (``round(y_k), round(x_k)``; the annotations are integer
  pixels, where this is exactly where the uint8 Gaussian is 1) and 0 elsewhere, all zeros for a
  missing joint or one outside the image; ``sigma`` is then unused.

  Args:
    keypoints: float ``[18, 2]`` or batched ``[..., 18, 2]`` (y, x) pixel coordinates, -1 = missing.
    height: H, image height in pixels (> 0).
    width: W, image width in pixels (> 0).
    sigma: Gaussian standard deviation in pixels (> 0); PATN uses 6 at 256×176.
    encoding: ``'gaussian'`` (default) or ``'one_pixel'`` (PATN's uint8 maps, see above).

  Returns:
    float32 ``[..., H, W, 18]`` heatmaps in ``[0, 1]`` (``{0, 1}`` for ``'one_pixel'``).

  Raises:
    ValueError: keypoints not of shape ``[..., 18, 2]``, non-positive size or sigma, an unknown
      encoding.
  """
  keypoints = np.asarray(keypoints, dtype=np.float32)
  if keypoints.ndim < 2 or keypoints.shape[-2:] != (NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape [..., {NUM_JOINTS}, 2], got {keypoints.shape}")
  if height <= 0 or width <= 0:
    raise ValueError(f"height and width must be positive, got {height}x{width}")
  if not sigma > 0:
    raise ValueError(f"sigma must be positive, got {sigma}")
  if encoding not in ENCODINGS:
    raise ValueError(f"unknown pose encoding {encoding!r}; expected one of {ENCODINGS}")
  present = present_mask(keypoints)                                     # [..., 18]
  if encoding == "one_pixel":
    iy = np.round(keypoints[..., 0]).astype(np.int64)
    ix = np.round(keypoints[..., 1]).astype(np.int64)
    gy = (np.arange(height) == iy[..., None]) & present[..., None]      # [..., 18, H]
    gx = np.arange(width) == ix[..., None]                               # [..., 18, W]
    return np.einsum("...kh,...kw->...hwk", gy.astype(np.float32), gx.astype(np.float32))
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
  Source: RATE-Net ``data/keypoint_funit.py`` (PATN's optional flip in ``data/keypoint.py`` does
  not swap channels).

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


#: The 13 limbs interpolated for HPN's denser local descriptors, as (joint, joint) index pairs:
#: neck–nose, the two shoulders, both upper and lower arms, the two neck–hip torso sides and both
#: thighs and shins. The eye/ear links are left out (the face is already covered densely by the
#: nose, eye and ear points at 1/8 of the image height) and so are hands ("we are not interested in
#: fingers", HPN §3.2). HPN (§3.4, Fig. 4) gives only the counts 18 / 31 / 44; 31 =
#: 18 + 13 and 44 = 18 + 2·13 are matched by splitting each of these 13 limbs into 2 or 3 equal
#: parts. The list is our reading of Fig. 4 (no public code exists).
LOCAL_DESCRIPTOR_LIMBS = (
    (1, 0),                              # neck – nose
    (1, 2), (2, 3), (3, 4),              # right shoulder, upper arm, lower arm
    (1, 5), (5, 6), (6, 7),              # left shoulder, upper arm, lower arm
    (1, 8), (8, 9), (9, 10),             # right torso side, thigh, shin
    (1, 11), (11, 12), (12, 13),         # left torso side, thigh, shin
)

#: Number of local descriptors → interior points per limb.
_POINTS_PER_LIMB = {18: 0, 31: 1, 44: 2}


def local_descriptor_points(keypoints: np.ndarray, num_points: int) -> tuple[np.ndarray, np.ndarray]:
  """Centres of HPN's local descriptors: the 18 joints plus points interpolated along limbs.

  ``num_points`` = 18: the joints. 31: the joints and the midpoint of each of the 13
  :data:`LOCAL_DESCRIPTOR_LIMBS`. 44: the joints and the points at 1/3 and 2/3 of each limb (the
  limb split into three equal parts). Point order: the 18 joints in OpenPose order, then per limb
  (in :data:`LOCAL_DESCRIPTOR_LIMBS` order) its interior points from the first joint to the second.
  An interpolated point is missing when either end joint is missing.

  Source: HPN §3.2 and §3.4 (18 points at 64² and 128², 31 at 256² and 512², 44 at
  1024²; "interpolating between keypoint pairs"); the limb list is our choice (see the constant).

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) pixels, -1 = missing.
    num_points: 18, 31 or 44.

  Returns:
    ``(points, valid)``: float32 ``[..., num_points, 2]`` (y, x) pixels (-1 where missing) and bool
    ``[..., num_points]``.

  Raises:
    ValueError: ``num_points`` not in (18, 31, 44), or keypoints not of shape ``[..., 18, 2]``.
  """
  if num_points not in _POINTS_PER_LIMB:
    raise ValueError(f"num_points={num_points!r}: HPN uses 18, 31 or 44 local descriptors")
  keypoints = np.asarray(keypoints, dtype=np.float32)
  if keypoints.shape[-2:] != (NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape [..., {NUM_JOINTS}, 2], got {keypoints.shape}")
  present = present_mask(keypoints)
  points, valid = [keypoints], [present]
  k = _POINTS_PER_LIMB[num_points]
  if k:
    a_idx = np.array([a for a, _ in LOCAL_DESCRIPTOR_LIMBS])
    b_idx = np.array([b for _, b in LOCAL_DESCRIPTOR_LIMBS])
    a, b = keypoints[..., a_idx, :], keypoints[..., b_idx, :]            # [..., 13, 2]
    ok = present[..., a_idx] & present[..., b_idx]                      # [..., 13]
    t = (np.arange(1, k + 1, dtype=np.float32) / (k + 1))[:, None]      # [k, 1]
    inter = a[..., :, None, :] + t * (b - a)[..., :, None, :]           # [..., 13, k, 2]
    inter = inter.reshape(*inter.shape[:-3], len(LOCAL_DESCRIPTOR_LIMBS) * k, 2)
    ok = np.repeat(ok, k, axis=-1)
    points.append(np.where(ok[..., None], inter, np.float32(MISSING)))
    valid.append(ok)
  return np.concatenate(points, axis=-2).astype(np.float32), np.concatenate(valid, axis=-1)


def local_descriptor_boxes(keypoints: np.ndarray, num_points: int, image_size: tuple[int, int],
                           side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Square regions of HPN's local descriptors (local perceptual loss, local D, local-SSIM).

  Each box has side ``side`` (default ``H // 8``: "one-eighth of the input image resolution",
  HPN §3.2, the height for non-square images) and is centred on a local-descriptor point
  (:func:`local_descriptor_points`) rounded to the nearest pixel, then shifted (not shrunk) so it
  lies inside the image — every box has the same size, which the jitted losses need. A missing
  point gives an empty box ``(0, 0, 0, 0)`` with ``valid`` False.

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) pixels in the ``image_size`` image, -1 = missing.
    num_points: 18, 31 or 44.
    image_size: (H, W) pixels.
    side: box side in pixels; default ``max(1, H // 8)``; must be ≤ min(H, W).

  Returns:
    ``(boxes, valid)``: int32 ``[..., num_points, 4]`` as (y0, x0, y1, x1), end-exclusive, with
    ``0 ≤ y0 < y1 = y0 + side ≤ H`` (same for x) for valid boxes; bool ``[..., num_points]``.

  Raises:
    ValueError: bad ``num_points``/keypoint shape, or ``side`` outside ``[1, min(H, W)]``.
  """
  h, w = image_size
  side = max(1, h // 8) if side is None else int(side)
  if not 1 <= side <= min(h, w):
    raise ValueError(f"local descriptor side={side} must lie in [1, min(H, W)={min(h, w)}]")
  points, valid = local_descriptor_points(keypoints, num_points)
  centre = np.rint(points).astype(np.int64)
  y0 = np.clip(centre[..., 0] - side // 2, 0, h - side)
  x0 = np.clip(centre[..., 1] - side // 2, 0, w - side)
  boxes = np.stack([y0, x0, y0 + side, x0 + side], axis=-1)
  boxes = np.where(valid[..., None], boxes, 0)
  return boxes.astype(np.int32), valid

"""Dense appearance flow for DIAF: warp op, flow targets, binary-disk pose maps, EPE.

DIAF (Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019,
arXiv:1903.11326; reference code ly015/intrinsic_flow @ 94ea8f0).

**Flow convention (used everywhere in hpt-jax).** A flow map ``F`` is float32 ``[..., H, W, 2]``
defined on the *target* image grid (paper Eq. 1, ``f_i = u'_i − u_i``): channel 0 is the
horizontal displacement ``dx`` and channel 1 the vertical ``dy``, in pixels of the image the flow
belongs to, pointing from a target pixel ``(y, x)`` to its corresponding point
``(y + dy, x + dx)`` in the *source* image. This is the reference code's (x, y) channel order
(``.corr`` files store absolute (x, y)); note that keypoints in hpt-jax are (y, x)
(:mod:`hpt_jax.pose`). Pixel centres are at integer coordinates (``(0, 0)`` is the centre of the
top-left pixel), i.e. PyTorch ``grid_sample(align_corners=True)`` with the grid normalised by
``W − 1`` / ``H − 1`` — what the reference code does (``models/modules.py`` ``warp_acc_flow``).

**Visibility convention.** int32 ``[..., H, W]`` on the target grid with the reference code's
classes (``data/flow_dataset.py`` ``read_corr``): :data:`VISIBLE` = 0 (human pixel visible in both
images), :data:`INVISIBLE` = 1 (human pixel with no visible correspondence in the source),
:data:`BACKGROUND` = 2.

**Where flow targets come from.**

* :func:`read_corr` reads the authors' precomputed 3D-model correspondences (``.corr`` files of the
  DeepFashion tarball, HMR + SMPL rendering; reference ``scripts/data_generation/``) — with them the
  flow module trains exactly as in the paper.
* :func:`skeleton_pseudo_flow` is **not** the paper's 3D flow: it is a 2-D *limb-affine
  pseudo-ground-truth* computed from the two 18-keypoint skeletons alone (rule in its docstring),
  so the flow module can be trained on any annotated pair (e.g. the bundled sample).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from hpt_jax import errors, pose

VISIBLE = 0
INVISIBLE = 1
BACKGROUND = 2
NUM_VIS_CLASSES = 3


# ------------------------------------------------------------------------------------ warp op
def warp(x: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward-warps ``x`` by ``flow`` with bilinear sampling and zero padding.

  ``out[b, y, x', c] = Σ_corners w · x[b, y_c, x_c, c]`` sampled at ``(y + dy, x' + dx)`` (flow
  convention in the module docstring); the four neighbouring pixels get the usual bilinear weights
  and a neighbour outside the image contributes 0 (``grid_sample(mode='bilinear',
  padding_mode='zeros', align_corners=True)``, the reference code's ``warp_acc_flow``; paper §3.4
  "spatial transformer layer"). A zero flow returns ``x`` exactly (the sample lands on a pixel
  centre with weight 1, the other weights are exactly 0); an integer translation returns the
  shifted image exactly with zeros shifted in. Differentiable in ``x`` and, almost everywhere (not
  at integer sample coordinates), in ``flow``.

  Args:
    x: ``[B, H, W, C]`` features or images, any float dtype.
    flow: ``[B, H, W, 2]`` (dx, dy) in pixels of this resolution, on the output grid. Only the
      output grid must match ``x``'s spatial size.

  Returns:
    ``[B, H, W, C]`` in ``x.dtype`` (coordinates and weights are computed in float32).

  Raises:
    ValueError: shapes do not match ``[B, H, W, C]`` / ``[B, H, W, 2]``.
  """
  if x.ndim != 4 or flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[:3] != x.shape[:3]:
    raise ValueError(f"warp: expected x [B, H, W, C] and flow [B, H, W, 2] with the same B, H, W; "
                     f"got {x.shape} and {flow.shape}")
  b, h, w, c = x.shape
  flow = flow.astype(jnp.float32)
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  sx = gx[None] + flow[..., 0]
  sy = gy[None] + flow[..., 1]
  x0 = jnp.floor(sx)
  y0 = jnp.floor(sy)
  wx1 = sx - x0
  wy1 = sy - y0
  wx0 = 1.0 - wx1
  wy0 = 1.0 - wy1
  flat = x.reshape(b, h * w, c)
  x0i = x0.astype(jnp.int32)
  y0i = y0.astype(jnp.int32)

  def corner(yi, xi, weight):
    valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).reshape(b, h * w, 1)
    vals = jnp.take_along_axis(flat, idx, axis=1).reshape(b, h, w, c).astype(jnp.float32)
    return vals * jnp.where(valid, weight, 0.0)[..., None]

  out = (corner(y0i, x0i, wy0 * wx0) + corner(y0i, x0i + 1, wy0 * wx1)
         + corner(y0i + 1, x0i, wy1 * wx0) + corner(y0i + 1, x0i + 1, wy1 * wx1))
  return out.astype(x.dtype)


def warp_numpy(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """Loop-free NumPy reference of :func:`warp` (float64), for tests. Same shapes and convention."""
  x = np.asarray(x, np.float64)
  flow = np.asarray(flow, np.float64)
  b, h, w, c = x.shape
  gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  sx, sy = gx + flow[..., 0], gy + flow[..., 1]
  out = np.zeros_like(x)
  bi = np.arange(b)[:, None, None]
  for dy in (0, 1):
    for dx in (0, 1):
      xi = np.floor(sx).astype(int) + dx
      yi = np.floor(sy).astype(int) + dy
      wgt = (1 - np.abs(sx - xi)) * (1 - np.abs(sy - yi))
      valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      vals = x[bi, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
      out += vals * (wgt * valid)[..., None]
  return out


def block_mean(x: jax.Array, factor: int) -> jax.Array:
  """Mean over non-overlapping ``factor``×``factor`` blocks of an NHWC array (average pooling).

  Args:
    x: ``[B, H, W, C]``; H and W divisible by ``factor``.
    factor: positive int.

  Returns:
    ``[B, H/factor, W/factor, C]``, same dtype.
  """
  b, h, w, c = x.shape
  return jnp.mean(x.reshape(b, h // factor, factor, w // factor, factor, c), axis=(2, 4))


def downsample_flow(flow: jax.Array, factor: int) -> jax.Array:
  """Flow at 1/``factor`` resolution: average over ``factor``×``factor`` blocks, divided by ``factor``.

  As the reference ``models/networks.py`` ``DualUnetGenerator`` (``avg_pool(flow, 2^l) / 2^l``): the
  displacement is re-expressed in pixels of the smaller grid.

  Args:
    flow: ``[B, H, W, 2]`` pixels; H and W divisible by ``factor``.
    factor: positive int.

  Returns:
    ``[B, H/factor, W/factor, 2]`` float32.
  """
  if factor == 1:
    return flow.astype(jnp.float32)
  return block_mean(flow.astype(jnp.float32), factor) / factor


def downsample_visibility(vis: jax.Array, factor: int) -> jax.Array:
  """Visibility at 1/``factor`` resolution by min-pooling (priority visible > invisible > background).

  As the reference ``models/networks.py`` ``DualUnetGenerator`` (``-max_pool(-vis)``).

  Args:
    vis: int ``[B, H, W]`` classes; H and W divisible by ``factor``.
    factor: positive int.

  Returns:
    int32 ``[B, H/factor, W/factor]``.
  """
  if factor == 1:
    return vis.astype(jnp.int32)
  b, h, w = vis.shape
  return jnp.min(vis.astype(jnp.int32).reshape(b, h // factor, factor, w // factor, factor), axis=(2, 4))


# ------------------------------------------------------------------------------- pose maps
def keypoints_to_disks(keypoints: np.ndarray, height: int, width: int, radius: float) -> np.ndarray:
  """Binary disk pose maps, DIAF §3.1: channel k is 1 where ``(y−y_k)² + (x−x_k)² ≤ r²``, else 0.

  Reference ``data/base_dataset.py kp_to_map`` (r = 8 at 256×256). A
  missing joint (-1) gives an all-zero channel.

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) pixels, -1 = missing (:mod:`hpt_jax.pose`).
    height, width: H, W of the map in pixels (> 0).
    radius: disk radius r in pixels of this map (> 0).

  Returns:
    float32 ``[..., H, W, 18]`` in {0, 1}.

  Raises:
    ValueError: bad keypoint shape, size or radius.
  """
  keypoints = np.asarray(keypoints, np.float32)
  if keypoints.ndim < 2 or keypoints.shape[-2:] != (pose.NUM_JOINTS, 2):
    raise ValueError(f"keypoints must have shape [..., {pose.NUM_JOINTS}, 2], got {keypoints.shape}")
  if height <= 0 or width <= 0 or not radius > 0:
    raise ValueError(f"need positive height, width and radius, got {height}, {width}, {radius}")
  present = pose.present_mask(keypoints)
  ys = np.arange(height, dtype=np.float32)
  xs = np.arange(width, dtype=np.float32)
  dy2 = np.square(ys - keypoints[..., 0:1])              # [..., 18, H]
  dx2 = np.square(xs - keypoints[..., 1:2])              # [..., 18, W]
  inside = (dy2[..., :, None] + dx2[..., None, :]) <= np.float32(radius) ** 2   # [..., 18, H, W]
  inside &= present[..., None, None]
  return np.moveaxis(inside, -3, -1).astype(np.float32)


# ------------------------------------------------------------------------ .corr files
def read_corr(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads one of the authors' correspondence files (``3d/hmr/corr/{sid2}_{sid1}.corr``).

  Layout (reference ``util/flow_util.py write_corr``), native
  little-endian: int32 W, int32 H, float32 ``H×W×2`` absolute (x, y) coordinates in image 1 (the
  source) of every pixel of image 2 (the target), uint8 ``H×W`` visibility (0 visible, 1
  invisible, 2 background).

  Args:
    path: the ``.corr`` file.

  Returns:
    ``(corr, vis)``: float32 ``[H, W, 2]`` absolute (x, y) source coordinates, int32 ``[H, W]``.

  Raises:
    FileNotFoundError: no such file (names it).
    ValueError: truncated/oversized file or visibility values outside {0, 1, 2} (names the file).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"correspondence file {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 8:
    raise ValueError(f"{path}: not a .corr file (shorter than its 8-byte header)")
  w, h = (int(v) for v in np.frombuffer(data[:8], "<i4"))
  expected = 8 + h * w * 2 * 4 + h * w
  if w <= 0 or h <= 0 or len(data) != expected:
    raise ValueError(f"{path}: header says {w}x{h} (W x H), so {expected} bytes are expected, "
                     f"the file has {len(data)}")
  corr = np.frombuffer(data, "<f4", count=h * w * 2, offset=8).reshape(h, w, 2).astype(np.float32)
  vis = np.frombuffer(data, np.uint8, count=h * w, offset=8 + h * w * 8).reshape(h, w).astype(np.int32)
  if vis.max(initial=0) > BACKGROUND:
    raise ValueError(f"{path}: visibility values must be 0, 1 or 2, found {int(vis.max())}")
  return corr, vis


def write_corr(path: str | os.PathLike, corr: np.ndarray, vis: np.ndarray) -> None:
  """Writes the :func:`read_corr` layout (tests; converting other correspondence sources).

  Args:
    path: output file.
    corr: ``[H, W, 2]`` absolute (x, y) source coordinates.
    vis: ``[H, W]`` classes in {0, 1, 2}.
  """
  corr = np.asarray(corr, "<f4")
  h, w = corr.shape[:2]
  with open(path, "wb") as f:
    f.write(np.array([w, h], "<i4").tobytes())
    f.write(corr.tobytes())
    f.write(np.asarray(vis, np.uint8).reshape(h, w).tobytes())


def corr_to_flow(corr: np.ndarray, vis: np.ndarray, median_blur: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """Turns absolute correspondences into the flow convention (reference dataset loader, §3.1).

  ``flow = corr − pixel grid``, zeroed where ``vis == BACKGROUND`` and clipped to ``[−W, W]`` ×
  ``[−H, H]``; the visibility is median-filtered with a ``median_blur``×``median_blur`` window on
  human pixels (background stays background), as the reference loader does.

  Args:
    corr: float ``[H, W, 2]`` absolute (x, y).
    vis: int ``[H, W]``.
    median_blur: odd window size; 0 or 1 = no filtering.

  Returns:
    ``(flow float32 [H, W, 2], vis int32 [H, W])``.
  """
  corr = np.asarray(corr, np.float32)
  vis = np.asarray(vis, np.int32)
  h, w = vis.shape
  gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
  flow = corr - np.stack([gx, gy], -1)
  flow[vis == BACKGROUND] = 0
  flow[..., 0] = np.clip(flow[..., 0], -w, w)
  flow[..., 1] = np.clip(flow[..., 1], -h, h)
  if median_blur and median_blur > 1:
    from scipy import ndimage
    blurred = ndimage.median_filter(vis, size=median_blur, mode="nearest")
    vis = np.where(vis == BACKGROUND, vis, np.minimum(blurred, INVISIBLE)).astype(np.int32)
  return flow.astype(np.float32), vis


def resize_flow(flow: np.ndarray, vis: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Resizes a flow/visibility pair to ``size`` = (H', W'): nearest-neighbour sampling of pixel
  centres, displacements scaled by W'/W and H'/H. Returns ``(flow [H', W', 2], vis [H', W'])``."""
  h, w = vis.shape
  h1, w1 = size
  if (h, w) == (h1, w1):
    return flow, vis
  rows = np.clip(np.floor((np.arange(h1) + 0.5) * h / h1), 0, h - 1).astype(int)
  cols = np.clip(np.floor((np.arange(w1) + 0.5) * w / w1), 0, w - 1).astype(int)
  flow = flow[rows][:, cols] * np.array([w1 / w, h1 / h], np.float32)
  return flow.astype(np.float32), vis[rows][:, cols].astype(np.int32)


# --------------------------------------------------------------- skeleton pseudo ground truth
#: Bones of the OpenPose-18 skeleton used by :func:`skeleton_pseudo_flow`, as (joint a, joint b,
#: part). Parts group bones that move as one piece of body surface for the visibility rule.
BONES = (
    (1, 2, "torso"), (1, 5, "torso"), (1, 8, "torso"), (1, 11, "torso"), (2, 8, "torso"),
    (5, 11, "torso"), (8, 11, "torso"),
    (2, 3, "r_upper_arm"), (3, 4, "r_forearm"), (5, 6, "l_upper_arm"), (6, 7, "l_forearm"),
    (8, 9, "r_thigh"), (9, 10, "r_shin"), (11, 12, "l_thigh"), (12, 13, "l_shin"),
    (1, 0, "head"), (0, 14, "head"), (0, 15, "head"), (14, 16, "head"), (15, 17, "head"),
)
_TORSO_POLYGON = (2, 5, 11, 8)   # r_shoulder, l_shoulder, l_hip, r_hip


def _segment_distance(py, px, a, b):
  """Distance of points (py, px) (any equal shapes) to segment a→b ((y, x) each), and the
  unclamped along-bone parameter t and signed perpendicular offset d (pixels)."""
  vy, vx = b[0] - a[0], b[1] - a[1]
  length2 = vy * vy + vx * vx
  ry, rx = py - a[0], px - a[1]
  if length2 < 1e-6:
    dist = np.sqrt(ry * ry + rx * rx)
    return dist, np.zeros_like(dist), np.zeros_like(dist)
  t = (ry * vy + rx * vx) / length2
  tc = np.clip(t, 0.0, 1.0)
  dist = np.sqrt(np.square(py - (a[0] + tc * vy)) + np.square(px - (a[1] + tc * vx)))
  d = (rx * vy - ry * vx) / np.sqrt(length2)   # signed distance along the unit normal (-vx, vy)/|v| in (y, x)
  return dist, t, d


def _inside_polygon(py, px, corners):
  """Even-odd test of points against a polygon given as (y, x) corners."""
  inside = np.zeros(py.shape, bool)
  n = len(corners)
  for i in range(n):
    (y1, x1), (y2, x2) = corners[i], corners[(i + 1) % n]
    crosses = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
      xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    inside ^= crosses & (px < xint)
  return inside


def _bone_distances(keypoints, py, px):
  """[n_bones, ...] segment distances (inf for bones with a missing joint)."""
  present = pose.present_mask(keypoints)
  out = np.full((len(BONES),) + py.shape, np.inf, np.float32)
  for k, (a, b, _) in enumerate(BONES):
    if present[a] and present[b]:
      out[k] = _segment_distance(py, px, keypoints[a], keypoints[b])[0]
  return out


def skeleton_pseudo_flow(source_keypoints: np.ndarray, target_keypoints: np.ndarray,
                         height: int, width: int, radius: float,
                         occlusion_tolerance: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Limb-affine pseudo-ground-truth flow and visibility from two 18-keypoint skeletons.

  **Not the paper's 3D appearance flow** (DIAF §3.3 fits SMPL with HMR and renders
  correspondences; that needs data this project cannot produce offline). This is a 2-D stand-in
  so the flow module can be trained on any annotated pair; use :func:`read_corr` for the
  authors' 3D targets. Rule:

  1. **Body region of the target.** The target skeleton's bones (:data:`BONES`: torso, head,
     upper/lower arms and legs; a bone needs both joints) are thickened to capsules of radius
     ``radius``; the torso quadrilateral (shoulders and hips) is filled. Each target pixel inside
     this region is assigned to its nearest bone (torso-interior pixels to the nearest torso
     bone); pixels outside are **background** (flow 0).
  2. **Per-bone map.** A pixel ``p`` assigned to target bone ``a→b`` is written as
     ``p = a + t·(b − a) + d·n`` (``t`` along the bone, unclamped; ``d`` signed distance along the
     unit normal ``n``) and mapped to ``p' = a' + t·(b' − a') + d·s·n'`` on the source bone
     ``a'→b'`` — an affine map stretching along the bone and scaling across it by the global
     skeleton scale ``s`` (ratio of the mean lengths of the bones present in both skeletons,
     clipped to [0.5, 2]; the across-bone scale is global so a foreshortened limb does not become
     arbitrarily wide). Flow = ``p' − p``. A translated skeleton therefore gives a constant flow.
  3. **Visibility.** A body pixel is **visible** when its bone exists in the source, ``p'`` lies in
     the source image, and ``p'`` is not covered by another body part of the source: the
     distance from ``p'`` to the nearest source bone of the same part is at most the distance to
     the nearest source bone of any part plus ``occlusion_tolerance·radius`` (e.g. a torso pixel
     landing on the source arm that lies across the torso is invisible). Otherwise **invisible**.
     Invisible pixels whose bone is missing in the source get the mean displacement of the
     joints present in both skeletons (0 if there are none).

  Flows are clipped to ``[−W, W] × [−H, H]`` like the reference's.

  Args:
    source_keypoints: ``[18, 2]`` (y, x) pixels of the source image (image 1), -1 = missing.
    target_keypoints: ``[18, 2]`` (y, x) pixels of the target image (image 2), same frame size.
    height, width: H, W of the frame in pixels.
    radius: limb capsule radius in pixels (e.g. 16 at 256×256, scaled with the image).
    occlusion_tolerance: slack of the occlusion test, in units of ``radius``.

  Returns:
    ``(flow float32 [H, W, 2] (dx, dy) target → source, vis int32 [H, W])`` (module conventions).

  Raises:
    ValueError: keypoints not ``[18, 2]``, non-positive size or radius.
  """
  src = np.asarray(source_keypoints, np.float32)
  tgt = np.asarray(target_keypoints, np.float32)
  if src.shape != (pose.NUM_JOINTS, 2) or tgt.shape != (pose.NUM_JOINTS, 2):
    raise ValueError(f"keypoints must be [18, 2], got {src.shape} and {tgt.shape}")
  if height <= 0 or width <= 0 or not radius > 0:
    raise ValueError(f"need positive height, width and radius, got {height}, {width}, {radius}")
  py, px = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                       indexing="ij")
  flow = np.zeros((height, width, 2), np.float32)
  vis = np.full((height, width), BACKGROUND, np.int32)

  # 1. Target region and bone assignment.
  t_dist = _bone_distances(tgt, py, px)                         # [nb, H, W]
  eligible = t_dist <= radius
  tp = pose.present_mask(tgt)
  torso_bones = np.array([part == "torso" for _, _, part in BONES])
  if all(tp[j] for j in _TORSO_POLYGON):
    in_torso = _inside_polygon(py, px, [tgt[j] for j in _TORSO_POLYGON])
    eligible |= torso_bones[:, None, None] & in_torso[None] & np.isfinite(t_dist)
  body = eligible.any(0)
  if not body.any():
    return flow, vis
  owner = np.argmin(np.where(eligible, t_dist, np.inf), axis=0)  # [H, W]

  # Global scale and fallback displacement from the joints/bones present in both.
  sp = pose.present_mask(src)
  both = sp & tp
  fallback = (src[both] - tgt[both]).mean(0) if both.any() else np.zeros(2, np.float32)  # (y, x)
  lengths = [(np.linalg.norm(src[b] - src[a]), np.linalg.norm(tgt[b] - tgt[a]))
             for a, b, _ in BONES if both[a] and both[b]]
  s_len = sum(l for l, _ in lengths)
  t_len = sum(l for _, l in lengths)
  scale = float(np.clip(s_len / t_len, 0.5, 2.0)) if t_len > 1e-6 else 1.0

  # 2. Per-bone maps.
  qy = np.full((height, width), np.nan, np.float32)   # mapped source point p' (y, x)
  qx = np.full((height, width), np.nan, np.float32)
  for k, (a, b, _) in enumerate(BONES):
    sel = body & (owner == k)
    if not sel.any() or not (sp[a] and sp[b]):
      continue
    _, t, d = _segment_distance(py[sel], px[sel], tgt[a], tgt[b])
    sa, sb = src[a], src[b]
    vy, vx = sb[0] - sa[0], sb[1] - sa[1]
    n = np.hypot(vy, vx)
    if n < 1e-6:  # degenerate source bone: keep the target's normal direction
      ta, tb = tgt[a], tgt[b]
      ty, tx = tb[0] - ta[0], tb[1] - ta[1]
      tn = max(np.hypot(ty, tx), 1e-6)
      ny, nx = -tx / tn, ty / tn
    else:
      ny, nx = -vx / n, vy / n    # unit normal (y, x) matching _segment_distance's sign of d
    qy[sel] = sa[0] + t * vy + d * scale * ny
    qx[sel] = sa[1] + t * vx + d * scale * nx

  mapped = body & np.isfinite(qy)
  flow[..., 0] = np.where(body, fallback[1], 0)
  flow[..., 1] = np.where(body, fallback[0], 0)
  flow[mapped, 0] = qx[mapped] - px[mapped]
  flow[mapped, 1] = qy[mapped] - py[mapped]
  flow[..., 0] = np.clip(flow[..., 0], -width, width)
  flow[..., 1] = np.clip(flow[..., 1], -height, height)

  # 3. Visibility.
  vis[body] = INVISIBLE
  in_image = mapped & (qy >= 0) & (qy <= height - 1) & (qx >= 0) & (qx <= width - 1)
  if in_image.any():
    my, mx = qy[in_image], qx[in_image]
    s_dist = _bone_distances(src, my, mx)                                  # [nb, n]
    parts = np.array([part for _, _, part in BONES])
    own_part = parts[owner[in_image]]                                      # [n]
    same = parts[:, None] == own_part[None, :]                             # [nb, n]
    d_own = np.where(same, s_dist, np.inf).min(0)
    d_any = s_dist.min(0)
    ok = d_own <= d_any + occlusion_tolerance * radius
    sub = vis[in_image]
    sub[ok] = VISIBLE
    vis[in_image] = sub
  return flow, vis


# ------------------------------------------------------------------------------------- EPE
def endpoint_error(pred_flow: jax.Array, target_flow: jax.Array, vis: jax.Array) -> jax.Array:
  """Per-example end-point error on human pixels (reference ``EPE`` metric: masked mean L2).

  Args:
    pred_flow, target_flow: ``[B, H, W, 2]`` pixels (flow convention).
    vis: int ``[B, H, W]`` target visibility; pixels with ``vis < BACKGROUND`` count.

  Returns:
    float32 ``[B]`` mean ‖pred − target‖₂ in pixels over each example's human pixels (0 for an
    example without any). Works on NumPy and JAX arrays (uses ``jnp``).
  """
  err = jnp.sqrt(jnp.sum(jnp.square(jnp.asarray(pred_flow, jnp.float32) - jnp.asarray(target_flow, jnp.float32)), -1))
  mask = (jnp.asarray(vis) < BACKGROUND).astype(jnp.float32)
  return jnp.sum(err * mask, (1, 2)) / jnp.maximum(jnp.sum(mask, (1, 2)), 1.0)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
  """Colour-codes a flow for sample grids: hue = direction, saturation = magnitude.

  Args:
    flow: ``[..., H, W, 2]`` pixels.
    max_magnitude: magnitude shown fully saturated; default the maximum of ``flow`` (at least 1).

  Returns:
    float32 ``[..., H, W, 3]`` in [-1, 1] (zero flow is white).
  """
  flow = np.asarray(flow, np.float32)
  mag = np.hypot(flow[..., 0], flow[..., 1])
  m = max(float(mag.max(initial=0.0)), 1.0) if max_magnitude is None else max_magnitude
  hue = (np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi)) % 1.0
  sat = np.clip(mag / m, 0, 1)
  rgb = np.clip(np.stack([np.abs(hue * 6 - 3) - 1, 2 - np.abs(hue * 6 - 2), 2 - np.abs(hue * 6 - 4)], -1), 0, 1)
  rgb = 1 - sat[..., None] * (1 - rgb)
  return rgb * 2 - 1


def visibility_to_rgb(vis: np.ndarray) -> np.ndarray:
  """``[..., H, W]`` classes → ``[..., H, W, 3]`` in [-1, 1]: visible green, invisible red, background white."""
  palette = np.array([[-1, 1, -1], [1, -1, -1], [1, 1, 1]], np.float32)
  return palette[np.clip(np.asarray(vis, np.int64), 0, 2)]

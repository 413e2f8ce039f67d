r"""Hand keypoints for DRN's per-part keypoint error curves: MediaPipe's hand-landmark model in TF Lite.

DRN (Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network", IEEE
TIP 2021, arXiv:2005.12494, §III-B, Fig. 7) plots keypoint error curves for the body, the face and
the hands (hands at doubled thresholds). This module finds 21 hand landmarks per hand with
MediaPipe's palm detector ``palm_detection_full.tflite`` and hand-landmark model
``hand_landmark_full.tflite``, both shipped in the PyPI wheel ``mediapipe==0.10.14`` that
``python launch/fetch_models.py`` already reads for BlazePose (:mod:`hpt_jax.metrics.pose_estimator`:
the wheel is read as a zip, never installed; file names, wheel paths and sha256 in
:data:`hpt_jax.metrics.pose_estimator.MODEL_SHA256`).

Pipeline of :meth:`MediaPipeHandEstimator.estimate`, one image at a time, as MediaPipe's
single-image hand graph (``hand_landmark_tracking_cpu.pbtxt`` without tracking):

1. **Palm detection** (:meth:`MediaPipeHandEstimator.detect_palms`, ``palm_detection_cpu.pbtxt``):
   the image is letterboxed to the 192×192 input (aspect kept, black borders, RGB in [0, 1]); boxes
   and 7 palm keypoints are decoded from SSD anchors (4 layers, strides 8, 16, 16, 16; 2 anchors per
   layer and cell; 2016 anchors); scores are sigmoids of the logits clipped at ±100; detections
   below 0.5 are dropped and overlapping ones (IoU > 0.3) merged by score-weighted averaging.
2. **Hand ROI** (``hand_landmark/palm_detection_detection_to_roi.pbtxt``): rotation that makes palm keypoint 0
   (wrist) → 2 (middle-finger base) point up; the box shifted by −0.5 of its height along the hand,
   squared on its longer side and scaled by 2.6.
3. **Landmarks** (below), kept when the hand-presence score is ≥ 0.5.
4. **Sides**: each found hand is given to the person's right or left hand by the distance of its
   wrist landmark to the wrists (OpenPose-18 joints 4 and 7) of the body keypoints passed in (in
   the evaluation: the annotated *target* pose, the same for the generated and the real target
   image, so their hands are compared side by side); closest pairs first, at most
   ``max_wrist_distance`` × the image height apart (0.16: 41 px at 256, above the largest curve
   threshold, 40 px, so the gate does not decide a score the curve would count).

Landmarks (``hand_landmark_cpu.pbtxt``): the rotated square ROI is resampled bilinearly to the
224×224 RGB input in [0, 1] (black outside the image); the model returns 21 (x, y, z) landmarks in
input pixels, mapped back through the ROI's rotation and scale, and a hand-presence score in [0, 1]
(a hand is present at ≥ 0.5, MediaPipe's threshold). The 21 landmarks: 0 wrist, 1–4 thumb (CMC,
MCP, IP, tip), 5–8 index, 9–12 middle, 13–16 ring, 17–20 pinky (MCP, PIP, DIP, tip).

Source: MediaPipe Hands (``mediapipe/modules/hand_landmark/hand_landmark_full.tflite``,
``mediapipe/modules/palm_detection/palm_detection_full.tflite``, PyPI ``mediapipe`` 0.10.14,
Apache-2.0); Zhang et al., "MediaPipe Hands: On-device Real-time Hand Tracking", arXiv:2006.10214,
2020. Graphs (google-ai-edge/mediapipe @ v0.10.14, ``mediapipe/modules/``):
``palm_detection/palm_detection_cpu.pbtxt``, ``hand_landmark/palm_detection_detection_to_roi.pbtxt``,
``hand_landmark/hand_landmark_cpu.pbtxt``, ``hand_landmark/hand_landmark_tracking_cpu.pbtxt``.

Measured on the 41 real target images of the bundled ``pairs_eval.csv`` (73 annotated wrists):
57 hands found, each on the side of its annotated wrist in the 18 images checked by eye (timing in
``docs/evaluation.md``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from hpt_jax.metrics import pose_estimator as pe

__all__ = [
    "MediaPipeHandEstimator", "HandROI", "PalmDetection", "roi_transform", "assign_sides",
    "count_hands", "NUM_HAND_LANDMARKS", "HAND_SIDES",
]

HAND_LANDMARK_MODEL, PALM_DETECTOR_MODEL = pe.HAND_LANDMARK_MODEL, pe.PALM_DETECTOR_MODEL
#: Landmarks per hand.
NUM_HAND_LANDMARKS = 21
#: Hand slots of :meth:`MediaPipeHandEstimator.estimate`: (name, OpenPose-18 wrist) — "right" is
#: the person's right, as in OpenPose.
HAND_SIDES = (("right", 4), ("left", 7))

_PALM_STRIDES = (8, 16, 16, 16)
_PALM_NUM_ANCHORS = 2016


@dataclasses.dataclass(frozen=True)
class HandROI:
  """A rotated square region of an image, in continuous pixel coordinates (pixel i spans [i, i+1)).

  Attributes:
    cy, cx: centre (pixels). side: side (pixels, > 0). rotation: radians; a point at offset
      (u, v) (x right, y down) from the centre of the upright crop lies at
      ``(cx, cy) + R(rotation) · (u, v)`` in the image, so the crop's "up" is the image direction
      ``(sin r, −cos r)`` (x, y).
  """
  cy: float
  cx: float
  side: float
  rotation: float = 0.0


@dataclasses.dataclass(frozen=True)
class PalmDetection:
  """One palm from :meth:`MediaPipeHandEstimator.detect_palms`: ``score`` in [0, 1], ``box``
  (y0, x0, y1, x1) and ``keypoints`` float32 [7, 2] (y, x) in continuous image pixels, ``roi`` the
  hand ROI MediaPipe derives from it."""
  score: float
  box: Tuple[float, float, float, float]
  keypoints: np.ndarray
  roi: HandROI


def _rotation_up(start_yx, end_yx) -> float:
  """Rotation (radians) that makes the vector start→end point up in the crop (MediaPipe's
  ``rotation_vector_target_angle_degrees: 90``)."""
  dy, dx = float(end_yx[0] - start_yx[0]), float(end_yx[1] - start_yx[1])
  return math.atan2(dx, -dy)


def roi_transform(roi: HandROI, n: int) -> np.ndarray:
  """The 2×3 affine map from crop pixels (x, y) of an ``n × n`` crop (continuous) to image pixels
  (x, y) (continuous): ``image = A[:, :2] @ crop + A[:, 2]``."""
  s = roi.side / n
  c, si = math.cos(roi.rotation), math.sin(roi.rotation)
  a = np.array([[c * s, -si * s], [si * s, c * s]])
  t = np.array([roi.cx, roi.cy]) - a @ np.array([n / 2.0, n / 2.0])
  return np.concatenate([a, t[:, None]], axis=1)


def _crop(image, roi: HandROI, n: int) -> np.ndarray:
  """The ROI resampled bilinearly to ``n × n``, black outside the image: float32 [n, n, 3] in [0, 1]."""
  from PIL import Image  # noqa: PLC0415
  m = roi_transform(roi, n)
  # PIL AFFINE maps output (x, y) -> input (a x + b y + c, d x + e y + f), both continuous.
  crop = image.transform((n, n), Image.AFFINE, tuple(m.ravel()), resample=Image.BILINEAR,
                         fillcolor=(0, 0, 0))
  return np.asarray(crop, dtype=np.float32) / np.float32(255.0)


class MediaPipeHandEstimator:
  """21 landmarks per hand from MediaPipe's ``hand_landmark_full.tflite`` (module docstring).

  One palm-detector run per image and one landmark-model run per palm.

  Args:
    model_dir: directory holding the models (default ``$HPT_JAX_MODELS_DIR`` or
      ``~/.cache/hpt_jax/models``, where ``python launch/fetch_models.py`` puts them).
    presence_threshold: a hand is found when the model's hand-presence score (in [0, 1]) is at
      least this (0.5, MediaPipe's value).
    min_palm_score: palm detections below this score are dropped (0.5, MediaPipe's value).
    max_wrist_distance: most distance between a hand's wrist landmark and the body wrist it is
      given to, as a fraction of the image height (0.16, module docstring).
    verify_hash: check the models' sha256 (:data:`hpt_jax.metrics.pose_estimator.MODEL_SHA256`).
    num_threads: TF Lite interpreter threads (None = its default).

  Raises:
    hpt_jax.metrics.pose_estimator.ModelNotFoundError: a model is absent (names the paths looked at
      and ``python launch/fetch_models.py``). ValueError: a model's sha256 does not match.
    hpt_jax.errors.MissingDependencyError: no TF Lite runtime (the ``pose`` extra).
  """

  input_size = 224
  palm_input_size = 192

  def __init__(self, model_dir: Optional[str] = None, *, presence_threshold: float = 0.5,
               min_palm_score: float = 0.5, max_wrist_distance: float = 0.16,
               verify_hash: bool = True, num_threads: Optional[int] = None):
    self.presence_threshold = float(presence_threshold)
    self.max_wrist_distance = float(max_wrist_distance)
    self.min_palm_score = float(min_palm_score)
    self.model_path = pe._find_model(HAND_LANDMARK_MODEL, model_dir, verify_hash)
    self._interp = pe._make_interpreter(self.model_path, num_threads)
    self._input_index = self._interp.get_input_details()[0]["index"]
    outs = sorted(self._interp.get_output_details(), key=lambda d: d["name"])
    # Identity [1, 63] landmarks, Identity_1 [1, 1] presence, Identity_2 [1, 1] handedness,
    # Identity_3 [1, 63] world landmarks.
    self._landmarks_index, self._presence_index = outs[0]["index"], outs[1]["index"]
    self.palm_model_path = pe._find_model(PALM_DETECTOR_MODEL, model_dir, verify_hash)
    self._palm = pe._make_interpreter(self.palm_model_path, num_threads)
    self._palm_input = self._palm.get_input_details()[0]["index"]
    by_size = {int(np.prod(d["shape"])): d["index"] for d in self._palm.get_output_details()}
    self._palm_raw, self._palm_score = by_size[_PALM_NUM_ANCHORS * 18], by_size[_PALM_NUM_ANCHORS]
    self._anchors = pe._ssd_anchors(self.palm_input_size, _PALM_STRIDES)

  def landmarks(self, image, roi: HandROI) -> Tuple[np.ndarray, float]:
    """The hand landmarks in one ROI.

    Args:
      image: uint8 ``[H, W, 3]`` RGB or a PIL image. roi: where to look.

    Returns:
      (float32 ``[21, 2]`` (y, x) pixels of the image (pixel i centred at i; may lie outside the
      image), hand-presence score in [0, 1]).
    """
    from PIL import Image  # noqa: PLC0415
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    n = self.input_size
    self._interp.set_tensor(self._input_index, _crop(pil, roi, n)[None])
    self._interp.invoke()
    lm = np.array(self._interp.get_tensor(self._landmarks_index), np.float64).reshape(-1, 3)[:, :2]
    presence = float(np.array(self._interp.get_tensor(self._presence_index)).reshape(-1)[0])
    m = roi_transform(roi, n)
    xy = lm @ m[:, :2].T + m[:, 2] - 0.5          # continuous -> pixel-index coordinates
    return xy[:, ::-1].astype(np.float32), presence

  def estimate(self, images, body_keypoints) -> Tuple[np.ndarray, np.ndarray]:
    """Both hands of one person per image (module docstring: palms, ROIs, landmarks, sides).

    Args:
      images: uint8 ``[N, H, W, 3]`` RGB.
      body_keypoints: float ``[N, 18, 2]`` (y, x) OpenPose-18 keypoints of the pose each image
        shows (e.g. the annotated target pose), -1 = missing; only the wrists are used, to name
        the hands' sides.

    Returns:
      (keypoints float32 ``[N, 42, 2]`` (y, x) pixels (pixel i centred at i): the person's right
      hand's 21 landmarks, then the left hand's; a hand not found, or whose body wrist is missing,
      is all -1, and so are landmarks outside the image,
       presence float32 ``[N, 2]`` in [0, 1]: hand-presence score of each side's hand, 0 if none).

    Raises:
      ValueError: bad shapes or dtypes.
    """
    imgs = np.asarray(images)
    kps = np.asarray(body_keypoints, np.float32)
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
      raise ValueError(f"images must be [N,H,W,3] uint8 RGB, got {imgs.shape} {imgs.dtype}")
    if kps.shape != (imgs.shape[0], 18, 2):
      raise ValueError(f"body_keypoints must be [N, 18, 2] matching the images, got {kps.shape}")
    from PIL import Image  # noqa: PLC0415
    n, h, w = imgs.shape[:3]
    out = np.full((n, len(HAND_SIDES) * NUM_HAND_LANDMARKS, 2), -1.0, np.float32)
    presence = np.zeros((n, len(HAND_SIDES)), np.float32)
    for i in range(n):
      img = np.ascontiguousarray(imgs[i])
      pil = Image.fromarray(img)
      hands = []
      for palm in self.detect_palms(img):
        lm, p = self.landmarks(pil, palm.roi)
        if p >= self.presence_threshold:
          hands.append((lm, p))
      for k, hand in assign_sides([lm[0] for lm, _ in hands], kps[i],
                                  self.max_wrist_distance * h).items():
        lm, p = hands[hand]
        inside = (lm[:, 0] >= 0) & (lm[:, 0] < h) & (lm[:, 1] >= 0) & (lm[:, 1] < w)
        out[i, k * NUM_HAND_LANDMARKS:(k + 1) * NUM_HAND_LANDMARKS] = np.where(inside[:, None], lm, -1.0)
        presence[i, k] = p
    return out, presence

  def detect_palms(self, image) -> list:
    """Palms in one image with MediaPipe's palm detector (``palm_detector=True``), best first.

    Args:
      image: uint8 ``[H, W, 3]`` RGB.

    Returns:
      list of :class:`PalmDetection` scoring at least ``min_palm_score``.

    """
    from PIL import Image  # noqa: PLC0415
    img = np.ascontiguousarray(np.asarray(image))
    h, w = img.shape[:2]
    side = float(max(h, w))
    n = self.palm_input_size
    x = pe._square_window(Image.fromarray(img), h / 2.0, w / 2.0, side, n)   # letterbox, [0, 1]
    self._palm.set_tensor(self._palm_input, x[None])
    self._palm.invoke()
    raw = np.array(self._palm.get_tensor(self._palm_raw)).reshape(-1, 18) / np.float32(n)
    score = pe._sigmoid(np.clip(np.array(self._palm.get_tensor(self._palm_score)).reshape(-1), -100, 100))
    keep = np.flatnonzero(score >= self.min_palm_score)
    if not len(keep):
      return []
    a, r, s = self._anchors[keep], raw[keep], score[keep]
    # raw: x_centre, y_centre, w, h, then (x, y) of 7 palm keypoints; offsets from the anchor / n.
    cy, cx = a[:, 0] + r[:, 1], a[:, 1] + r[:, 0]
    boxes = np.stack([cy - r[:, 3] / 2, cx - r[:, 2] / 2, cy + r[:, 3] / 2, cx + r[:, 2] / 2], -1)
    kps = np.stack([a[:, None, 0] + r[:, 5::2], a[:, None, 1] + r[:, 4::2]], -1)   # [K, 7, 2] (y, x)
    order = list(np.argsort(-s))
    palms = []
    off = np.array([h / 2.0 - side / 2, w / 2.0 - side / 2])                      # letterbox -> image
    while order:
      ious = pe._iou(boxes[order[0]], boxes[order])
      group = [order[k] for k in np.flatnonzero(ious > 0.3)] or [order[0]]
      wts = s[group] / s[group].sum()
      box = (wts[:, None] * boxes[group]).sum(0) * side + np.tile(off, 2)
      kp = (wts[:, None, None] * kps[group]).sum(0) * side + off
      order = [o for o in order if o not in group]
      # palm_detection_detection_to_roi: rotation wrist (0) -> middle-finger MCP (2) pointing up;
      # shift by -0.5 box height along the hand; square of the longer side, scaled by 2.6.
      rot = _rotation_up(kp[0], kp[2])
      bh, bw = box[2] - box[0], box[3] - box[1]
      cy_, cx_ = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
      cx_ += -bh * -0.5 * math.sin(rot)
      cy_ += bh * -0.5 * math.cos(rot)
      palms.append(PalmDetection(score=float(s[group[0]]), box=tuple(float(v) for v in box),
                                 keypoints=kp.astype(np.float32),
                                 roi=HandROI(float(cy_), float(cx_), 2.6 * float(max(bh, bw)), rot)))
    return palms


def assign_sides(wrists: Sequence, body_keypoints, max_distance: float) -> dict:
  """Gives found hands to the person's sides (module docstring, step 4).

  Args:
    wrists: (y, x) wrist landmark of each found hand (pixels).
    body_keypoints: float ``[18, 2]`` (y, x) OpenPose-18 keypoints, -1 = missing.
    max_distance: most distance in pixels between a hand's wrist and the body wrist.

  Returns:
    ``{side index (0 right, 1 left): hand index}``; the closest (hand, side) pairs first, each hand
    and side used once; sides whose body wrist is missing get no hand.
  """
  kp = np.asarray(body_keypoints, np.float64)
  pairs = []
  for k, (_, wrist) in enumerate(HAND_SIDES):
    if np.all(kp[wrist] != -1):
      for j, yx in enumerate(wrists):
        d = float(np.linalg.norm(np.asarray(yx, np.float64) - kp[wrist]))
        if d <= max_distance:
          pairs.append((d, k, j))
  taken: dict = {}
  for _, k, j in sorted(pairs):
    if k not in taken and j not in taken.values():
      taken[k] = j
  return taken


def count_hands(keypoints: Sequence) -> int:
  """Hands found in ``[N, 42, 2]`` hand keypoints (a hand with any present landmark)."""
  kp = np.asarray(keypoints).reshape(-1, 2, NUM_HAND_LANDMARKS, 2)
  return int(np.any(np.all(kp != -1, axis=-1), axis=-1).sum())

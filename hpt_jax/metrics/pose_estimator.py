r"""Offline OpenPose-18 keypoint estimator for PCKh: MediaPipe BlazePose (full) in TF Lite.

PATN computes PCKh from keypoints that a pose estimator (OpenPose in PATN) detects on the
*generated* images (:func:`hpt_jax.metrics.pckh.pckh`). OpenPose weights are not on a package
registry, so this module uses the MediaPipe BlazePose GHUM 3D landmark model
``pose_landmark_full.tflite`` shipped inside the PyPI wheel ``mediapipe==0.10.14`` (later wheels
ship no pose models). The ``mediapipe`` package itself is *not* installed (its protobuf<5 pin
clashes with TensorFlow 2.21): ``python launch/fetch_models.py`` downloads the wheel with pip,
extracts the one ``.tflite`` file and checks its sha256 (:data:`MODEL_SHA256`). The model runs in
``ai_edge_litert`` / ``tflite_runtime`` if installed, else ``tf.lite.Interpreter``; TensorFlow is
imported lazily, only when an estimator is built.

Pipeline (without the person detector, the default for PCKh: DeepFashion-like images show one roughly
centred, upright person; with ``person_detector=True`` step 1 starts from the largest person
that MediaPipe's BlazePose detector finds instead, see :class:`MediaPipePersonDetector`):

1. **Letterbox**: a square window of side ``margin * max(H, W)`` (``margin = 1.75``) centred on
   the image, zero (black) outside the image, resampled bilinearly to the model's 256x256 RGB
   input in ``[0, 1]``.
2. **ROI refinement** (``refine_passes = 2`` times): as in MediaPipe's tracking graph, the square
   ROI is re-centred on auxiliary landmark 33 (body centre) with side
   ``2 * roi_scale * |lm34 - lm33|`` (``roi_scale = 1.25``, MediaPipe's value); no rotation.
3. The 39x5 output (x, y, z, visibility logit, presence logit; x, y in input pixels) is mapped back
   to the original image; the 33 BlazePose landmarks are mapped to OpenPose-18
   (:data:`BLAZEPOSE_TO_OPENPOSE`; MediaPipe's "left" is the person's left, as OpenPose's, checked
   against the sample's ground truth); neck = midpoint of the two shoulders.
4. A joint is missing (-1, -1) if ``sigmoid(visibility) < visibility_threshold`` (0.1) or it lies
   outside ``[0, H) x [0, W)``; the neck is missing unless both shoulders are present.

Parameters were chosen on the 314-image vendored DeepFashion sample (``docs/pose_estimator.md``
has the measured agreement with its ground truth and the sweeps): the visibility threshold 0.1
keeps the agreement within 0.5 point of no threshold while raising the recall of
ground-truth-missing joints from 0.60 to 0.69 at a missing-joint precision of 0.93.

The landmark model also predicts a person segmentation mask of its ROI (its third output,
sigmoid of the logits), which :meth:`MediaPipePoseEstimator.estimate_person` maps back to the image
(used by :mod:`hpt_jax.transfer` to check and remove the background).

Source: MediaPipe BlazePose (``mediapipe/modules/pose_landmark/pose_landmark_full.tflite`` and
``mediapipe/modules/pose_detection/pose_detection.tflite``, PyPI ``mediapipe`` 0.10.14,
Apache-2.0); Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking",
arXiv:2006.10204, 2020. The detector's decoding follows MediaPipe's published graph
``mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`` (SSD anchors, box/keypoint decoding,
weighted non-maximum suppression) and ``pose_landmark/pose_detection_to_roi.pbtxt`` (ROI from the
two full-body alignment points). Measure agreement: ``python -m hpt_jax.metrics.pose_estimator``
(``--person_detector`` for the detector path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from hpt_jax import errors

__all__ = [
    "MediaPipePoseEstimator", "MediaPipePersonDetector", "PersonDetection", "PersonEstimate",
    "ModelNotFoundError", "measure_agreement", "load_annotated_images", "default_model_dir",
    "model_search_dirs", "BLAZEPOSE_TO_OPENPOSE", "MEDIAPIPE_VERSION", "LANDMARK_MODEL",
    "DETECTOR_MODEL", "HAND_LANDMARK_MODEL", "PALM_DETECTOR_MODEL", "MODEL_SHA256", "MODEL_WHEEL_PATHS", "FETCH_COMMAND",
]

#: PyPI mediapipe release whose wheel ships the model.
MEDIAPIPE_VERSION = "0.10.14"
#: File name of the landmark model in the models directory.
LANDMARK_MODEL = "pose_landmark_full.tflite"
#: File name of the person (pose) detector model in the models directory.
DETECTOR_MODEL = "pose_detection.tflite"
#: File name of MediaPipe's hand-landmark model (:mod:`hpt_jax.metrics.hand_landmarks`).
HAND_LANDMARK_MODEL = "hand_landmark_full.tflite"
#: File name of MediaPipe's palm-detection model (:mod:`hpt_jax.metrics.hand_landmarks`).
PALM_DETECTOR_MODEL = "palm_detection_full.tflite"
#: Path of each model inside the mediapipe wheel (a zip); ``python launch/fetch_models.py`` extracts
#: them all.
MODEL_WHEEL_PATHS = {LANDMARK_MODEL: "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                     DETECTOR_MODEL: "mediapipe/modules/pose_detection/pose_detection.tflite",
                     HAND_LANDMARK_MODEL: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                     PALM_DETECTOR_MODEL: "mediapipe/modules/palm_detection/palm_detection_full.tflite"}
#: sha256 of each extracted model (mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64 wheel).
MODEL_SHA256 = {
    LANDMARK_MODEL: "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    DETECTOR_MODEL: "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    HAND_LANDMARK_MODEL: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    PALM_DETECTOR_MODEL: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
}
#: Command that downloads the model.
FETCH_COMMAND = "python launch/fetch_models.py"
#: Environment variable naming the models directory.
MODELS_DIR_ENV = "HPT_JAX_MODELS_DIR"

#: BlazePose landmark index for each OpenPose-18 joint (None: the neck, computed from the
#: shoulders). BlazePose: 0 nose, 2 left eye, 5 right eye, 7 left ear, 8 right ear, 11/12 left/right
#: shoulder, 13/14 elbow, 15/16 wrist, 23/24 hip, 25/26 knee, 27/28 ankle ("left" = the person's
#: left, as in OpenPose).
BLAZEPOSE_TO_OPENPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

_NUM_OUTPUT_LANDMARKS = 39  # 33 body + 2 auxiliary (33 centre, 34 scale) + 4 unused
_CENTER, _SCALE = 33, 34
_R_SHOULDER, _L_SHOULDER, _NECK = 2, 5, 1


def default_model_dir() -> str:
  """``$HPT_JAX_MODELS_DIR`` if set, else ``~/.cache/hpt_jax/models``."""
  env = os.environ.get(MODELS_DIR_ENV)
  if env:
    return os.path.abspath(os.path.expanduser(env))
  return os.path.join(os.path.expanduser("~"), ".cache", "hpt_jax", "models")


def model_search_dirs(model_dir: Optional[str] = None) -> Tuple[str, ...]:
  """Directories searched for the model: ``model_dir`` if given, else :func:`default_model_dir`."""
  if model_dir is not None:
    return (os.path.abspath(os.path.expanduser(os.fspath(model_dir))),)
  return (default_model_dir(),)


def file_sha256(path: str) -> str:
  """Hex sha256 of a file."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _make_interpreter(model_path: str, num_threads: Optional[int]):
  """A TF Lite interpreter: ai_edge_litert, tflite_runtime, else tf.lite (imported lazily)."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # type: ignore
  except ImportError:
    try:
      from tflite_runtime.interpreter import Interpreter  # type: ignore
    except ImportError:
      os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
      try:
        import tensorflow as tf  # noqa: PLC0415  (lazy: only the estimator needs TensorFlow)
      except ImportError as e:
        raise errors.missing_extra("the pose estimator (keypoints from photos, PCKh)", "pose",
                                   ImportError("no TF Lite runtime", name="ai_edge_litert")) from e
      Interpreter = tf.lite.Interpreter
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
    interp = Interpreter(model_path=model_path, num_threads=num_threads)
  # The runtime's C++ logger announces its XNNPACK delegate on stderr ("INFO: Created TensorFlow
  # Lite XNNPACK delegate for CPU.") when tensors are allocated; keep command-line output clean.
  with _quiet_stderr():
    interp.allocate_tensors()
  return interp


@contextlib.contextmanager
def _quiet_stderr():
  """Sends file descriptor 2 (C/C++ stderr) to /dev/null for the duration; Python exceptions are
  unaffected."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):   # no real stderr (e.g. some notebook kernels)
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class ModelNotFoundError(errors.UserError, FileNotFoundError):
  """A MediaPipe model file is absent; the message names the paths looked at and the fetch command."""


def _find_model(name: str, model_dir: Optional[str], verify_hash: bool) -> str:
  """Path of model ``name`` in the models directory, its sha256 checked.

  Raises:
    ModelNotFoundError: the file is absent (names the paths and ``python launch/fetch_models.py``).
    ValueError: its sha256 differs from :data:`MODEL_SHA256`.
  """
  looked = [os.path.join(d, name) for d in model_search_dirs(model_dir)]
  found = [p for p in looked if os.path.isfile(p)]
  if not found:
    raise ModelNotFoundError(
        f"MediaPipe model {name} not found; looked at: {', '.join(looked)}. "
        f"Download it with `{FETCH_COMMAND}` (models dir: --models_dir or ${MODELS_DIR_ENV}).")
  if verify_hash:
    digest = file_sha256(found[0])
    if digest != MODEL_SHA256[name]:
      raise ValueError(f"{found[0]}: sha256 {digest} != expected {MODEL_SHA256[name]}; re-fetch with "
                       f"`{FETCH_COMMAND} --force`.")
  return found[0]


def _square_window(image, cy: float, cx: float, side: float, n: int):
  """The square window (centre, side in continuous pixel coordinates, pixel i spanning [i, i+1))
  resampled bilinearly to ``n × n``, black outside the image: float32 ``[n, n, 3]`` in [0, 1]."""
  from PIL import Image  # noqa: PLC0415
  s = side / n
  # PIL AFFINE maps output (x, y) -> input (a x + b y + c, d x + e y + f), both continuous.
  crop = image.transform((n, n), Image.AFFINE, (s, 0.0, cx - side / 2, 0.0, s, cy - side / 2),
                         resample=Image.BILINEAR, fillcolor=(0, 0, 0))
  return np.asarray(crop, dtype=np.float32) / np.float32(255.0)


# ------------------------------------------------------------------------------ person detector

#: MediaPipe's pose-detector options (``pose_detection_cpu.pbtxt``): 224×224 input, SSD anchors of
#: 5 layers with strides 8, 16, 32, 32, 32, 2 fixed-size anchors per layer and cell (aspect ratio
#: 1 plus the interpolated scale), 2254 anchors in all; raw coordinates are pixels of the input.
_DETECTOR_STRIDES = (8, 16, 32, 32, 32)
_DETECTOR_NUM_ANCHORS = 2254


def _ssd_anchors(input_size: int = 224, strides: Sequence[int] = _DETECTOR_STRIDES) -> np.ndarray:
  """Anchor centres ``[A, 2]`` (y, x) in [0, 1] of MediaPipe's ``SsdAnchorsCalculator`` with
  ``fixed_anchor_size``: consecutive layers of equal stride share one grid; per grid cell, 2
  anchors per layer; order: layer group, row, column, anchor."""
  out, i = [], 0
  while i < len(strides):
    j = i
    while j < len(strides) and strides[j] == strides[i]:
      j += 1
    fm = int(np.ceil(input_size / strides[i]))
    yy, xx = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
    cells = np.stack([yy.ravel(), xx.ravel()], -1)
    out.append(np.repeat(cells, 2 * (j - i), axis=0))
    i = j
  return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of one (y0, x0, y1, x1) box with ``[N, 4]`` boxes."""
  y0 = np.maximum(box[0], boxes[:, 0])
  x0 = np.maximum(box[1], boxes[:, 1])
  y1 = np.minimum(box[2], boxes[:, 2])
  x1 = np.minimum(box[3], boxes[:, 3])
  inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
  return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


@dataclasses.dataclass(frozen=True)
class PersonDetection:
  """One person found by :class:`MediaPipePersonDetector`, in pixel coordinates of the image
  (continuous: pixel i spans [i, i+1)).

  Attributes:
    score: detection score in [0, 1].
    face_box: (y0, x0, y1, x1) of the face (what the detector's box encloses).
    hip_centre: (y, x) of the mid-hip alignment point.
    roi: (cy, cx, side) of the square body region MediaPipe crops for the landmark model: centre
      at the mid-hip point, side ``2 · roi_scale · |scale point − mid-hip|``.
  """
  score: float
  face_box: Tuple[float, float, float, float]
  hip_centre: Tuple[float, float]
  roi: Tuple[float, float, float]

  @property
  def size(self) -> float:
    """Side of :attr:`roi` in pixels (the person's size; the largest person is picked)."""
    return self.roi[2]


class MediaPipePersonDetector:
  """MediaPipe's BlazePose person detector (``pose_detection.tflite`` of mediapipe 0.10.14).

  The image is letterboxed to the 224×224 input (aspect kept, black borders, RGB in [-1, 1]);
  boxes and the 4 alignment keypoints are decoded from the SSD anchors, scores are sigmoids of the
  logits (clipped at ±100), detections below ``min_score`` are dropped and overlapping ones
  (IoU > 0.3) are merged by score-weighted averaging (MediaPipe's ``WEIGHTED`` non-maximum
  suppression). The body ROI is MediaPipe's ``pose_detection_to_roi``: centre at keypoint 0 (mid
  hip), side 2·|keypoint 1 − keypoint 0| scaled by ``roi_scale`` (1.25).

  Args:
    model_dir: directory holding ``pose_detection.tflite`` (default as for
      :class:`MediaPipePoseEstimator`).
    min_score: detection score threshold in [0, 1]; 0.2, the threshold of MediaPipe's decoding step
      (its ``min_detection_confidence`` for a person is 0.5: see
      :attr:`MediaPipePoseEstimator.person_score`).
    roi_scale: ROI side factor.
    verify_hash: check the model's sha256. num_threads: TF Lite threads.

  Raises:
    ModelNotFoundError: the model is absent (names the paths and the fetch command).
  """

  input_size = 224

  def __init__(self, model_dir: Optional[str] = None, *, min_score: float = 0.2, roi_scale: float = 1.25,
               verify_hash: bool = True, num_threads: Optional[int] = None):
    self.model_path = _find_model(DETECTOR_MODEL, model_dir, verify_hash)
    self.min_score = float(min_score)
    self.roi_scale = float(roi_scale)
    self._interp = _make_interpreter(self.model_path, num_threads)
    self._input_index = self._interp.get_input_details()[0]["index"]
    by_size = {int(np.prod(d["shape"])): d["index"] for d in self._interp.get_output_details()}
    self._raw_index = by_size[_DETECTOR_NUM_ANCHORS * 12]     # "Identity" [1, 2254, 12]
    self._score_index = by_size[_DETECTOR_NUM_ANCHORS]        # "Identity_1" [1, 2254, 1]
    self._anchors = _ssd_anchors(self.input_size)

  def detect(self, image) -> list:
    """People in one image, largest first.

    Args:
      image: uint8 ``[H, W, 3]`` RGB, any size.

    Returns:
      list of :class:`PersonDetection`, sorted by :attr:`PersonDetection.size`, descending.
    """
    from PIL import Image  # noqa: PLC0415
    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    side = float(max(h, w))
    n = self.input_size
    x = _square_window(Image.fromarray(img), h / 2.0, w / 2.0, side, n) * 2.0 - 1.0
    self._interp.set_tensor(self._input_index, x[None])
    self._interp.invoke()
    raw = np.array(self._interp.get_tensor(self._raw_index)).reshape(-1, 12) / np.float32(n)
    score = _sigmoid(np.clip(np.array(self._interp.get_tensor(self._score_index)).reshape(-1), -100, 100))
    keep = np.flatnonzero(score >= self.min_score)
    if not len(keep):
      return []
    a = self._anchors[keep]
    r = raw[keep]
    # raw: x_centre, y_centre, w, h, then (x, y) per keypoint, offsets in input pixels / n.
    cy, cx = a[:, 0] + r[:, 1], a[:, 1] + r[:, 0]
    boxes = np.stack([cy - r[:, 3] / 2, cx - r[:, 2] / 2, cy + r[:, 3] / 2, cx + r[:, 2] / 2], -1)
    kps = np.stack([a[:, None, 0] + r[:, 5::2], a[:, None, 1] + r[:, 4::2]], -1)     # [K, 4, 2] (y, x)
    s = score[keep]
    # MediaPipe's weighted non-maximum suppression (min_suppression_threshold 0.3, IoU).
    order = list(np.argsort(-s))
    merged = []
    while order:
      ious = _iou(boxes[order[0]], boxes[order])
      group = [order[k] for k in np.flatnonzero(ious > 0.3)] or [order[0]]
      wts = s[group] / s[group].sum()
      merged.append((float(s[order[0]]), (wts[:, None] * boxes[group]).sum(0),
                     (wts[:, None, None] * kps[group]).sum(0)))
      order = [o for o in order if o not in group]
    people = []
    off = np.array([h / 2.0 - side / 2, w / 2.0 - side / 2], np.float32)   # letterbox → image
    for sc, box, kp in merged:
      box = box * side + np.tile(off, 2)
      kp = kp * side + off
      roi_side = 2.0 * self.roi_scale * float(np.linalg.norm(kp[1] - kp[0]))
      people.append(PersonDetection(score=sc, face_box=tuple(float(v) for v in box),
                                    hip_centre=(float(kp[0, 0]), float(kp[0, 1])),
                                    roi=(float(kp[0, 0]), float(kp[0, 1]), roi_side)))
    return sorted(people, key=lambda p: -p.size)


# ------------------------------------------------------------------------------ landmarks


@dataclasses.dataclass
class PersonEstimate:
  """What :meth:`MediaPipePoseEstimator.estimate_person` found in one image.

  Attributes:
    keypoints: float32 ``[18, 2]`` (y, x) pixels of the image (pixel i centred at i), OpenPose-18
      order, (-1, -1) = missing (as :meth:`MediaPipePoseEstimator.estimate`).
    visibility: float32 ``[18]`` BlazePose visibility in [0, 1] (neck = min of the shoulders).
    presence: BlazePose pose-presence score in [0, 1] of the last landmark pass.
    num_people: people the detector found with a score of at least ``person_score`` (0.5); 1 when
      only a less certain detection was found; None when the detector was not used.
    detection: the detection the landmarks started from: the largest person scoring at least
      ``person_score``, else the best-scoring detection (≥ the detector's ``min_score``, 0.2; e.g.
      people seen from the back, whose faces the detector does not see), else None (detector off,
      or nobody detected: then the image-centred window was used).
    segmentation: float32 ``[H, W]`` person probability in [0, 1] (BlazePose segmentation of the
      final ROI; 0 outside it), or None when not asked for.
  """
  keypoints: np.ndarray
  visibility: np.ndarray
  presence: float
  num_people: Optional[int]
  detection: Optional[PersonDetection]
  segmentation: Optional[np.ndarray] = None

  @property
  def num_joints(self) -> int:
    """Number of present joints."""
    return int(np.all(self.keypoints != -1, axis=-1).sum())


class MediaPipePoseEstimator:
  """OpenPose-18 keypoints from MediaPipe BlazePose full (model of mediapipe 0.10.14).

  Single person per image; CPU TF Lite inference, ``1 + refine_passes`` model runs per image
  (about 20 ms each on one CPU core), plus one detector run (about 13 ms) with
  ``person_detector``.

  Args:
    model_dir: directory holding ``pose_landmark_full.tflite`` (and ``pose_detection.tflite`` for
      the detector); default ``$HPT_JAX_MODELS_DIR`` or ``~/.cache/hpt_jax/models`` (where
      ``python launch/fetch_models.py`` puts them).
    visibility_threshold: a joint whose BlazePose visibility (sigmoid of the logit, in [0, 1]) is
      below this is reported missing. 0.1 (see the module docstring).
    margin: side of the first, image-centred square window as a multiple of ``max(H, W)``.
    roi_scale: ROI side = ``2 * roi_scale * |aux34 - aux33|`` in the refinement passes.
    refine_passes: number of ROI refinement passes (0 = letterbox only).
    person_detector: start from the largest person MediaPipe's detector finds
      (:class:`MediaPipePersonDetector`) instead of the image-centred window, so people anywhere
      in the image and of any size are found; when it finds nobody, the image-centred window is
      used. Off by default (the PCKh protocol of ``docs/pose_estimator.md``).
    person_score: detections scoring at least this count as people (MediaPipe's
      ``min_detection_confidence``, 0.5).
    verify_hash: check the model file's sha256 against :data:`MODEL_SHA256`.
    num_threads: TF Lite interpreter threads (None = its default).

  Raises:
    ModelNotFoundError: a model file is absent (the message names the paths looked at and the
      fetch command ``python launch/fetch_models.py``); a ``FileNotFoundError``.
    ValueError: the model file's sha256 does not match, or bad parameters.
  """

  def __init__(self, model_dir: Optional[str] = None, *, visibility_threshold: float = 0.1,
               margin: float = 1.75, roi_scale: float = 1.25, refine_passes: int = 2,
               person_detector: bool = False, person_score: float = 0.5, verify_hash: bool = True,
               num_threads: Optional[int] = None):
    if margin <= 0 or roi_scale <= 0 or refine_passes < 0:
      raise ValueError(f"need margin > 0, roi_scale > 0, refine_passes >= 0; got {margin}, "
                       f"{roi_scale}, {refine_passes}")
    self.model_path = _find_model(LANDMARK_MODEL, model_dir, verify_hash)
    self.detector = (MediaPipePersonDetector(model_dir, verify_hash=verify_hash, num_threads=num_threads)
                     if person_detector else None)
    self.person_score = float(person_score)
    self.visibility_threshold = float(visibility_threshold)
    self.margin = float(margin)
    self.roi_scale = float(roi_scale)
    self.refine_passes = int(refine_passes)
    self._interp = _make_interpreter(self.model_path, num_threads)
    inp = self._interp.get_input_details()[0]
    self._input_index = inp["index"]
    self.input_size = int(inp["shape"][1])  # 256 (square)
    outs = {d["name"]: d for d in self._interp.get_output_details()}
    by_size = {int(np.prod(d["shape"])): d["index"] for d in outs.values()}
    self._landmarks_index = by_size[_NUM_OUTPUT_LANDMARKS * 5]  # "Identity" [1, 195]
    self._flag_index = by_size[1]                               # "Identity_1" [1, 1]
    self._segmentation_index = by_size[self.input_size * self.input_size]   # "Identity_2" [1, 256, 256, 1]

  # -------------------------------------------------------------------------- internals

  def _run_roi(self, image, cy: float, cx: float, side: float):
    """Runs the model on the square ROI (centre, side in continuous pixel coordinates, pixel i
    spanning [i, i+1)); returns landmarks [39, 2] (y, x) continuous coords, visibility [39],
    pose score, segmentation logits [n, n] of the ROI."""
    n = self.input_size
    s = side / n
    x = _square_window(image, cy, cx, side, n)[None]
    self._interp.set_tensor(self._input_index, x)
    self._interp.invoke()
    lm = np.array(self._interp.get_tensor(self._landmarks_index)).reshape(_NUM_OUTPUT_LANDMARKS, 5)
    flag = float(np.array(self._interp.get_tensor(self._flag_index)).reshape(-1)[0])
    yx = np.stack([lm[:, 1] * s + cy - side / 2, lm[:, 0] * s + cx - side / 2], axis=-1)
    seg = np.array(self._interp.get_tensor(self._segmentation_index), np.float32).reshape(n, n)
    return yx, _sigmoid(lm[:, 3]), flag, seg

  def _segmentation(self, h: int, w: int, roi: Tuple[float, float, float], logits: np.ndarray) -> np.ndarray:
    """Segmentation ``logits`` [n, n] of the ROI ``roi`` = (cy, cx, side) mapped to the ``h × w``
    image: float32 [h, w] person probability in [0, 1], bilinear, 0 outside the ROI."""
    from PIL import Image  # noqa: PLC0415
    n = self.input_size
    cy, cx, side = roi
    s = side / n
    # Image pixel (x, y) (continuous) -> ROI input coordinates ((x - x0) / s, (y - y0) / s).
    mask = Image.fromarray(_sigmoid(logits).astype(np.float32)).transform(
        (w, h), Image.AFFINE, (1 / s, 0.0, -(cx - side / 2) / s, 0.0, 1 / s, -(cy - side / 2) / s),
        resample=Image.BILINEAR, fillcolor=0.0)
    return np.clip(np.asarray(mask, np.float32), 0.0, 1.0)

  def _estimate_one(self, img: np.ndarray, detection: Optional[PersonDetection] = None):
    """Landmarks from the image-centred window (or ``detection``'s ROI) and ``refine_passes``
    re-centred passes; returns (keypoints [18, 2], scores [18], flag, final ROI (cy, cx, side),
    its segmentation logits)."""
    from PIL import Image  # noqa: PLC0415
    h, w = img.shape[:2]
    pil = Image.fromarray(img)
    roi = (h / 2.0, w / 2.0, self.margin * max(h, w)) if detection is None else detection.roi
    yx, vis, flag, seg = self._run_roi(pil, *roi)
    for _ in range(self.refine_passes):
      c, sc = yx[_CENTER], yx[_SCALE]
      new_side = 2.0 * self.roi_scale * float(np.linalg.norm(sc - c))
      # Guard against a degenerate ROI (no person found): keep the previous window.
      if not np.all(np.isfinite(c)) or not (0.1 * max(h, w) <= new_side <= 4.0 * max(h, w)):
        break
      roi = (float(c[0]), float(c[1]), new_side)
      yx, vis, flag, seg = self._run_roi(pil, *roi)
    yx = yx - 0.5  # continuous -> pixel-index coordinates (pixel i centred at i)
    kp = np.full((18, 2), -1.0, np.float32)
    score = np.zeros(18, np.float32)
    for k, j in enumerate(BLAZEPOSE_TO_OPENPOSE):
      if j is None:
        continue
      score[k] = vis[j]
      y, x = yx[j]
      if vis[j] >= self.visibility_threshold and 0 <= y < h and 0 <= x < w:
        kp[k] = (y, x)
    score[_NECK] = min(score[_R_SHOULDER], score[_L_SHOULDER])
    if np.all(kp[_R_SHOULDER] >= 0) and np.all(kp[_L_SHOULDER] >= 0):
      kp[_NECK] = (kp[_R_SHOULDER] + kp[_L_SHOULDER]) / 2
    return kp, score, flag, roi, seg

  # -------------------------------------------------------------------------- API

  def estimate_person(self, image, *, segmentation: bool = False) -> PersonEstimate:
    """Keypoints of one person in one image, with what was found on the way.

    With ``person_detector`` the landmarks start from the largest detected person (the others are
    counted in :attr:`PersonEstimate.num_people`); without a detection, from the image-centred
    window (then :attr:`PersonEstimate.presence` tells whether BlazePose sees a person at all).

    Args:
      image: uint8 ``[H, W, 3]`` RGB in [0, 255], any size.
      segmentation: also return the person mask (:attr:`PersonEstimate.segmentation`).

    Returns:
      a :class:`PersonEstimate`.

    Raises:
      ValueError: ``image`` is not a uint8 ``[H, W, 3]`` array.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
      raise ValueError(f"image must be [H,W,3] uint8 RGB, got {img.shape} {img.dtype}")
    img = np.ascontiguousarray(img)
    num_people, detection = None, None
    if self.detector is not None:
      people = self.detector.detect(img)                                 # largest first
      confident = [p for p in people if p.score >= self.person_score]
      detection = confident[0] if confident else max(people, key=lambda p: p.score, default=None)
      num_people = len(confident) or int(detection is not None)
    kp, score, flag, roi, seg = self._estimate_one(img, detection)
    if detection is not None and detection.score < self.person_score:
      # An uncertain detection (e.g. a person seen from the back): keep the image-centred window's
      # landmarks when BlazePose is more certain of them.
      centred = self._estimate_one(img, None)
      if centred[2] > flag:
        kp, score, flag, roi, seg = centred
    mask = self._segmentation(img.shape[0], img.shape[1], roi, seg) if segmentation else None
    return PersonEstimate(keypoints=kp, visibility=score, presence=flag, num_people=num_people,
                          detection=detection, segmentation=mask)

  def estimate_with_scores(self, images) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :meth:`estimate`, also returning the scores.

    Returns:
      (keypoints float32 [N,18,2] as in :meth:`estimate`,
       visibility float32 [N,18] in [0,1] (BlazePose visibility; neck = min of the shoulders),
       pose_score float32 [N] in [0,1] (BlazePose pose-presence flag of the last pass)).
    """
    imgs = np.asarray(images)
    if imgs.ndim == 3:
      raise ValueError(f"images must be [N,H,W,3] uint8, got a single image {imgs.shape}")
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
      raise ValueError(f"images must be [N,H,W,3] uint8 RGB, got {imgs.shape} {imgs.dtype}")
    n = imgs.shape[0]
    kps = np.full((n, 18, 2), -1.0, np.float32)
    scores = np.zeros((n, 18), np.float32)
    flags = np.zeros((n,), np.float32)
    for i in range(n):
      found = self.estimate_person(imgs[i])
      kps[i], scores[i], flags[i] = found.keypoints, found.visibility, found.presence
    return kps, scores, flags

  def estimate(self, images) -> np.ndarray:
    """Detects OpenPose-18 keypoints, one person per image.

    Args:
      images: uint8 ``[N, H, W, 3]`` RGB images in [0, 255] (any H, W; e.g. 256x176 DeepFashion).

    Returns:
      float32 ``[N, 18, 2]``: (y, x) = (row, column) pixel coordinates of the input images (pixel
      i centred at i, sub-pixel values), OpenPose-18 order (nose, neck, r-shoulder, r-elbow,
      r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye,
      l-eye, r-ear, l-ear; "r" = the person's right). Missing joints (visibility below
      ``visibility_threshold``, outside the image, or the neck without both shoulders) are
      (-1, -1); present joints lie in ``[0, H) x [0, W)``.

    Raises:
      ValueError: ``images`` is not a uint8 ``[N, H, W, 3]`` array.
    """
    return self.estimate_with_scores(images)[0]


# ------------------------------------------------------------------------------ agreement


def measure_agreement(estimator, images, keypoints,
                      fractions: Sequence[float] = (0.05, 0.1)) -> Dict[str, object]:
  """Agreement of an estimator's keypoints with ground truth on real images.

  Args:
    estimator: object with ``estimate(images) -> [N,18,2]`` (e.g. :class:`MediaPipePoseEstimator`).
    images: uint8 ``[N, H, W, 3]``.
    keypoints: ground truth ``[N, 18, 2]`` (y, x) pixels, -1 = missing.
    fractions: distance thresholds as fractions of the image height H.

  Returns:
    dict with
      ``within``: {fraction: share of ground-truth-visible joints detected within
        ``fraction * H`` pixels (Euclidean, strict <); undetected joints count as misses},
      ``per_joint_within``: {fraction: float [18] list, same per joint (NaN if never visible)},
      ``pckh``: PATN PCKh of the detections against the ground truth
        (:func:`hpt_jax.metrics.pckh.pckh`, head-box rule, thr 0.5), ``pckh_detail``: its dict,
      ``per_joint_pckh``: float [18] list, PCKh correctness rate per joint,
      ``detected``: share of ground-truth-visible joints the estimator reports present,
      ``missing_precision``: share of joints reported missing that are missing in the ground truth,
      ``missing_recall``: share of ground-truth-missing joints reported missing,
      ``mean_error_px``: mean Euclidean error over joints present in both,
      ``num_images``, ``num_visible_joints``, ``image_height``, ``pred``: [N,18,2] detections.
  """
  from hpt_jax.metrics.pckh import HEAD_JOINTS, pckh  # noqa: PLC0415

  imgs = np.asarray(images)
  gt = np.asarray(keypoints, dtype=np.float64)
  if gt.shape != (imgs.shape[0], 18, 2):
    raise ValueError(f"keypoints must be [N,18,2] for {imgs.shape[0]} images, got {gt.shape}")
  pred = np.asarray(estimator.estimate(imgs), dtype=np.float64)
  h = imgs.shape[1]
  tv = np.all(gt != -1, axis=-1)
  pv = np.all(pred != -1, axis=-1)
  dist = np.where(tv & pv, np.linalg.norm(pred - gt, axis=-1), np.inf)
  within, per_joint = {}, {}
  with np.errstate(invalid="ignore", divide="ignore"):
    for f in fractions:
      hit = (dist < f * h) & tv
      within[float(f)] = float(hit.sum() / max(tv.sum(), 1))
      per_joint[float(f)] = [float(v) for v in hit.sum(0) / tv.sum(0)]
  detail = pckh(pred, gt)
  # Per-joint PCKh correctness (same rule as pckh(), pooled per joint over kept images).
  hm = tv & np.isin(np.arange(18), HEAD_JOINTS)[None]
  keep = hm.sum(1) >= 2
  big = np.inf
  hh = np.where(hm, gt[..., 0], -big).max(1) - np.where(hm, gt[..., 0], big).min(1)
  ww = np.where(hm, gt[..., 1], -big).max(1) - np.where(hm, gt[..., 1], big).min(1)
  with np.errstate(invalid="ignore"):
    ok = (tv & pv & (np.abs(pred[..., 1] - gt[..., 1]) < 0.5 * ww[:, None])
          & (np.abs(pred[..., 0] - gt[..., 0]) < 0.5 * hh[:, None]))
  ok &= keep[:, None]
  den = (tv & keep[:, None]).sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_joint_pckh = [float(v) for v in ok.sum(0) / den]
  both = tv & pv
  return dict(
      within=within,
      per_joint_within=per_joint,
      pckh=float(detail["pckh"]),
      pckh_detail=detail,
      per_joint_pckh=per_joint_pckh,
      detected=float((tv & pv).sum() / max(tv.sum(), 1)),
      missing_precision=float((~pv & ~tv).sum() / max((~pv).sum(), 1)),
      missing_recall=float((~pv & ~tv).sum() / max((~tv).sum(), 1)),
      mean_error_px=float(dist[both].mean()) if both.any() else float("nan"),
      num_images=int(imgs.shape[0]),
      num_visible_joints=int(tv.sum()),
      image_height=int(h),
      pred=pred.astype(np.float32),
  )


def load_annotated_images(data_dir: str, limit: Optional[int] = None):
  """Reads a PATN-format sample: ``data_dir/annotation.csv`` + ``data_dir/img/NAME``.

  Args:
    data_dir: e.g. ``hpt_jax/data/deepfashion_sample``; CSV header ``name:keypoints_y:keypoints_x``,
      rows ``NAME: [18 ints y]: [18 ints x]`` (-1 = missing).
    limit: keep only the first ``limit`` rows (file order).

  Returns:
    (names list[str], images uint8 [N,H,W,3], keypoints float32 [N,18,2] (y, x), -1 missing).
  """
  from PIL import Image  # noqa: PLC0415
  names, kps = [], []
  with open(os.path.join(data_dir, "annotation.csv")) as f:
    lines = [ln for ln in f.read().splitlines() if ln.strip()]
  for line in lines[1:]:
    name, ys, xs = line.split(":")
    y, x = json.loads(ys), json.loads(xs)
    k = np.stack([np.asarray(y, np.float32), np.asarray(x, np.float32)], -1)
    k[np.any(k == -1, axis=-1)] = -1
    names.append(name.strip())
    kps.append(k)
    if limit is not None and len(names) >= limit:
      break
  images = np.stack([np.asarray(Image.open(os.path.join(data_dir, "img", n)).convert("RGB"))
                     for n in names])
  return names, images, np.stack(kps).astype(np.float32)


def _main(argv=None) -> None:
  import argparse  # noqa: PLC0415
  import time  # noqa: PLC0415

  from hpt_jax.pose import JOINT_NAMES  # noqa: PLC0415

  from hpt_jax.data import DEEPFASHION_SAMPLE  # noqa: PLC0415
  p = argparse.ArgumentParser(description="Agreement of the MediaPipe pose estimator with the "
                              "ground truth of a PATN-format sample.")
  p.add_argument("--data_dir", default=DEEPFASHION_SAMPLE)
  p.add_argument("--models_dir", default=None)
  p.add_argument("--limit", type=int, default=None)
  p.add_argument("--visibility_threshold", type=float, default=0.1)
  p.add_argument("--margin", type=float, default=1.75)
  p.add_argument("--roi_scale", type=float, default=1.25)
  p.add_argument("--refine_passes", type=int, default=2)
  p.add_argument("--person_detector", action="store_true",
                 help="start from the largest person MediaPipe's detector finds (as transfer does)")
  a = p.parse_args(argv)
  _, images, gt = load_annotated_images(a.data_dir, a.limit)
  est = MediaPipePoseEstimator(a.models_dir, visibility_threshold=a.visibility_threshold,
                               margin=a.margin, roi_scale=a.roi_scale,
                               refine_passes=a.refine_passes, person_detector=a.person_detector)
  t0 = time.time()
  r = measure_agreement(est, images, gt)
  dt = time.time() - t0
  print(f"images {r['num_images']} ({images.shape[1]}x{images.shape[2]}), visible GT joints "
        f"{r['num_visible_joints']}, {dt:.1f} s ({1000 * dt / len(images):.0f} ms/image)")
  for f, v in r["within"].items():
    print(f"within {f:g}*H ({f * r['image_height']:.1f} px): {v:.4f}")
  print(f"PCKh (PATN rule): {r['pckh']:.4f} ({r['pckh_detail']['correct']}/"
        f"{r['pckh_detail']['total']}, {r['pckh_detail']['skipped_images']} images skipped)")
  print(f"detected {r['detected']:.4f}  missing precision {r['missing_precision']:.4f}  "
        f"missing recall {r['missing_recall']:.4f}  mean error {r['mean_error_px']:.2f} px")
  tv = np.all(gt != -1, axis=-1).sum(0)
  print("| joint | GT visible | within 0.05·H | within 0.1·H | PCKh |")
  print("|---|---:|---:|---:|---:|")
  for k, name in enumerate(JOINT_NAMES):
    w05, w10 = (r["per_joint_within"][f][k] for f in (0.05, 0.1))
    print(f"| {k} {name} | {tv[k]} | {w05:.3f} | {w10:.3f} | {r['per_joint_pckh'][k]:.3f} |")


if __name__ == "__main__":
  _main()

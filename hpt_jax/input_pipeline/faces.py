"""Face data for DRN's face enhancing module: the face cache, face boxes, 64×64 crops, sketches H_F.

Paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE TIP 2021, arXiv:2005.12494, §IV-A (Eq. 2, the face module and its sketch H_F), §V
(64×64 bicubic face crops; only pairs with a face in both images). The paper detects face boxes
with dlib (its reference [18], Kazemi & Sullivan, CVPR 2014) and face landmarks with OpenPose;
**we take both from dlib**: the HOG frontal-face detector and the 68-point landmark model
(``shape_predictor_68_face_landmarks.dat`` of the ``face_recognition_models`` package).

**The face cache** (:class:`FaceCache`, one ``.npz`` per data set, written once by
``python launch/prepare_faces.py`` with dlib, so training, inference and CI never detect again):
per image name, the face box, the 68 landmarks, whether the face is *frontal* and where the box
came from:

* ``dlib`` — the largest face of dlib's HOG detector (upsampled once), its 68 landmarks;
* ``keypoints`` — no dlib face: a fallback box around the annotated body keypoints nose, eyes and
  ears (OpenPose-18 joints 0, 14–17; at least two present): square, centred on their mean, side
  ``max(1.6 × their largest extent, 20 px)``. Such a face has no landmarks and is never frontal;
  the face module does not use it (it is cached for per-image face regions);
* ``none`` — neither.

**Frontal** (the paper's "frontal face available"): a dlib face whose 68-landmark yaw proxy
``(|x30 − x0| − |x16 − x30|) / max(x16 − x0, 1)`` (nose tip against the two ends of the jaw
contour; 0 = facing the camera, ±1 = profile) is within ``±FRONTAL_MAX_YAW`` (0.5: the nose tip
splits the jaw width at most 3 : 1). A pair is a **face pair** when both its images are frontal.

**Crop box** (:func:`crop_box`): square, centred on the landmarks' bounding box, side
``box_scale × max(its height, its width)`` rounded to whole pixels (``face.box_scale``, 1.25 by
default, so brows to chin plus some forehead); it may extend past the image (outside = black).
The same box is B_F of Eq. 2 for the target. **Crops** (:func:`crop_face`): the box, resized to
64×64 with bicubic interpolation (DRN §V). **Sketch** H_F (:func:`draw_sketch`): the 68
landmarks in crop coordinates drawn as 1-pixel lines (value 1 on 0), one channel: jaw contour
(0–16), the two brows (17–21, 22–26), nose bridge (27–30) and lower nose (31–35) as open
polylines; the two eyes (36–41, 42–47), outer lips (48–59) and inner lips (60–67) as closed
ones (landmarks rounded to the nearest crop pixel).

Coordinates are (y, x) pixels of the stored frame (``data.stored_size``), pixel centres at
integer + 0.5; boxes are int ``(y0, x0, y1, x1)``, end exclusive. **Licence**: the 68-point
model is trained on iBUG 300-W, whose images are for non-commercial research only; so is the
cache it produced (and DeepFashion's images are, too).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from hpt_jax import errors

#: Side of the face crops (DRN §V: 64×64, bicubic).
CROP_SIZE = 64
NUM_LANDMARKS = 68
#: |yaw proxy| at most this is frontal (module docstring).
FRONTAL_MAX_YAW = 0.5
#: ``(name, first, last (inclusive), closed)`` of the sketch's polylines (iBUG 68-point order).
LANDMARK_GROUPS = (
    ("jaw", 0, 16, False), ("right_brow", 17, 21, False), ("left_brow", 22, 26, False),
    ("nose_bridge", 27, 30, False), ("lower_nose", 31, 35, False), ("right_eye", 36, 41, True),
    ("left_eye", 42, 47, True), ("outer_lips", 48, 59, True), ("inner_lips", 60, 67, True),
)
#: ``box_source`` codes of the cache.
BOX_SOURCES = ("none", "dlib", "keypoints")
#: OpenPose-18 joints of the fallback box: nose, right/left eye, right/left ear.
FACE_JOINTS = (0, 14, 15, 16, 17)
CACHE_VERSION = 1
#: The cache's file name next to a data set's annotation CSV (:func:`default_cache_path`).
CACHE_FILE = "faces.npz"


class FaceCacheError(errors.UserError, ValueError):
  """A face cache file is missing, unreadable or of another version; the message names it."""


# --------------------------------------------------------------------------- geometry
def yaw_proxy(landmarks: np.ndarray) -> float:
  """The 68-landmark yaw proxy of the module docstring (0 frontal, ±1 profile); landmarks [68, 2] (y, x)."""
  x = np.asarray(landmarks, np.float64)[:, 1]
  return float((abs(x[30] - x[0]) - abs(x[16] - x[30])) / max(x[16] - x[0], 1.0))


def is_frontal(landmarks: np.ndarray | None) -> bool:
  """Whether 68 landmarks (or None) make a frontal face (module docstring)."""
  return landmarks is not None and bool(np.all(np.asarray(landmarks) >= 0)) and abs(yaw_proxy(landmarks)) <= FRONTAL_MAX_YAW


def crop_box(landmarks: np.ndarray, box_scale: float) -> np.ndarray:
  """The square crop box of 68 landmarks (module docstring).

  Args:
    landmarks: float [68, 2] (y, x) stored-frame pixels.
    box_scale: side / the landmarks' larger extent (> 0).

  Returns:
    int32 [4] ``(y0, x0, y1, x1)``, ``y1 − y0 == x1 − x0 >= 1``.
  """
  lm = np.asarray(landmarks, np.float64)
  lo, hi = lm.min(0), lm.max(0) + 1.0            # pixel extents (end exclusive)
  side = max(1, int(round(box_scale * float(np.max(hi - lo)))))
  centre = (lo + hi) / 2.0
  y0, x0 = (int(round(c - side / 2.0)) for c in centre)
  return np.array([y0, x0, y0 + side, x0 + side], np.int32)


def keypoint_box(keypoints: np.ndarray) -> np.ndarray | None:
  """The fallback face box from OpenPose-18 keypoints [18, 2] (module docstring), or None with
  fewer than two of nose/eyes/ears present. Returns int32 [4] ``(y0, x0, y1, x1)``."""
  kp = np.asarray(keypoints, np.float64)[list(FACE_JOINTS)]
  kp = kp[np.all(kp >= 0, axis=1)]
  if len(kp) < 2:
    return None
  side = max(1.6 * float(np.max(kp.max(0) - kp.min(0))), 20.0)
  centre = kp.mean(0) + 0.5
  y0, x0 = (int(round(c - side / 2.0)) for c in centre)
  s = int(round(side))
  return np.array([y0, x0, y0 + s, x0 + s], np.int32)


def crop_face(image: Image.Image | np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
  """The box of an image resized to ``size``×``size`` (bicubic), as float32 [size, size, 3] in [-1, 1].

  Args:
    image: RGB PIL image or uint8 [H, W, 3] in the stored frame.
    box: int ``(y0, x0, y1, x1)``; parts outside the image are black.
  """
  if not isinstance(image, Image.Image):
    image = Image.fromarray(np.asarray(image, np.uint8))
  y0, x0, y1, x1 = (int(v) for v in box)
  crop = image.crop((x0, y0, x1, y1))
  if crop.size != (size, size):
    crop = crop.resize((size, size), Image.BICUBIC)
  return np.asarray(crop, np.float32) / 127.5 - 1.0


def to_crop_coordinates(points: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
  """Stored-frame (y, x) pixels → pixel coordinates of the ``size``×``size`` crop of ``box``
  (pixel centres kept: ``u = (y + 0.5 − y0) · size / side − 0.5``)."""
  box = np.asarray(box, np.float64)
  side = np.array([box[2] - box[0], box[3] - box[1]])
  return (np.asarray(points, np.float64) + 0.5 - box[:2]) * size / side - 0.5


def draw_sketch(landmarks: np.ndarray | None, box: np.ndarray | None, size: int = CROP_SIZE) -> np.ndarray:
  """The landmark sketch H_F (module docstring): float32 [size, size, 1], 1 on the lines, 0 elsewhere.

  Args:
    landmarks: float [68, 2] (y, x) stored-frame pixels, or None (all zeros).
    box: the crop box the sketch is drawn in (:func:`crop_box`), or None (all zeros).
  """
  canvas = Image.new("L", (size, size), 0)
  if landmarks is not None and box is not None:
    pts = np.round(to_crop_coordinates(landmarks, box, size))      # nearest pixel (PIL would truncate)
    draw = ImageDraw.Draw(canvas)
    for _, first, last, closed in LANDMARK_GROUPS:
      line = [(float(x), float(y)) for y, x in pts[first:last + 1]]
      if closed:
        line.append(line[0])
      draw.line(line, fill=255, width=1)
  return (np.asarray(canvas, np.float32) / 255.0)[:, :, None]


# --------------------------------------------------------------------------- the cache
@dataclasses.dataclass
class FaceCache:
  """Faces of one data set's images (module docstring), as written by ``launch/prepare_faces.py``.

  Attributes:
    names: image file names (as in the annotation CSV), length N.
    boxes: int16 [N, 4] ``(y0, x0, y1, x1)`` face boxes (dlib's rectangle or the keypoint
      fallback), -1 where none.
    box_source: int8 [N], index into :data:`BOX_SOURCES`.
    landmarks: int16 [N, 68, 2] (y, x) of a dlib face, -1 where none.
    frontal: bool [N].
    meta: what made it (detector, models, rule, date).
  """

  names: list[str]
  boxes: np.ndarray
  box_source: np.ndarray
  landmarks: np.ndarray
  frontal: np.ndarray
  meta: dict

  def __post_init__(self):
    self._index = {n: i for i, n in enumerate(self.names)}

  def __len__(self) -> int:
    return len(self.names)

  def frontal_landmarks(self, path_or_name: str) -> np.ndarray | None:
    """float32 [68, 2] landmarks of a frontal face of the image (by file name or path), else None
    (no face, not frontal, or not in the cache)."""
    i = self._index.get(os.path.basename(path_or_name))
    if i is None or not self.frontal[i]:
      return None
    return self.landmarks[i].astype(np.float32)

  def counts(self) -> dict[str, int]:
    """``{'images', 'dlib', 'keypoints', 'none', 'frontal'}``."""
    out = {"images": len(self)}
    for k, name in enumerate(BOX_SOURCES):
      out[name] = int(np.sum(self.box_source == k))
    out["frontal"] = int(np.sum(self.frontal))
    return out

  def save(self, path: str) -> None:
    """Writes the ``.npz`` (compressed; no pickled objects)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, names=np.array(self.names), boxes=self.boxes.astype(np.int16),
                        box_source=self.box_source.astype(np.int8), landmarks=self.landmarks.astype(np.int16),
                        frontal=self.frontal.astype(bool),
                        meta=np.array(json.dumps({**self.meta, "version": CACHE_VERSION}, sort_keys=True)))
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "FaceCache":
    """Reads a cache written by :meth:`save`.

    Raises:
      FaceCacheError: the file is missing, unreadable or of another version (names it and the
        command that writes it).
    """
    hint = "write it with: python launch/prepare_faces.py --images=DIR --annotations=CSV (needs the faces extra)"
    if not os.path.isfile(path):
      raise FaceCacheError(f"face cache {path} does not exist; {hint}")
    try:
      with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        cache = cls(names=[str(n) for n in z["names"]], boxes=z["boxes"], box_source=z["box_source"],
                    landmarks=z["landmarks"], frontal=z["frontal"], meta=meta)
    except (OSError, KeyError, ValueError) as e:
      raise FaceCacheError(f"face cache {path} is unreadable ({e}); {hint}") from e
    if meta.get("version") != CACHE_VERSION:
      raise FaceCacheError(f"face cache {path} has version {meta.get('version')}, expected {CACHE_VERSION}; {hint}")
    return cache


def default_cache_path(data_config: Any) -> str:
  """Where a data block's face cache is by default: :data:`CACHE_FILE` next to its annotation CSV."""
  return os.path.join(os.path.dirname(os.path.abspath(data_config.annotations)), CACHE_FILE)


def detect(images: Sequence[tuple[str, Callable[[], Image.Image], np.ndarray]], *, upsample: int = 1,
           logger: Callable[[str], Any] | None = None) -> FaceCache:
  """Detects the faces of images with dlib and builds a :class:`FaceCache` (module docstring).

  Args:
    images: ``(name, open() -> RGB PIL image in the stored frame, OpenPose-18 keypoints [18, 2])``.
    upsample: dlib HOG detector upsampling (1: faces down to ~40 px in 256×176 images).
    logger: progress lines (every 100 images).

  Raises:
    hpt_jax.errors.MissingDependencyError: ``dlib`` or ``face_recognition_models`` missing (names
      the ``faces`` extra).
  """
  try:
    import dlib
    import face_recognition_models as frm
  except ImportError as e:
    raise errors.missing_extra("the face cache (dlib 68 landmarks)", "faces", e) from e
  detector = dlib.get_frontal_face_detector()
  model_path = frm.pose_predictor_model_location()
  predictor = dlib.shape_predictor(model_path)
  n = len(images)
  boxes = np.full((n, 4), -1, np.int16)
  source = np.zeros(n, np.int8)
  landmarks = np.full((n, NUM_LANDMARKS, 2), -1, np.int16)
  frontal = np.zeros(n, bool)
  for i, (name, open_fn, keypoints) in enumerate(images):
    img = np.ascontiguousarray(np.asarray(open_fn().convert("RGB"), np.uint8))
    dets = list(detector(img, upsample))
    if dets:
      rect = max(dets, key=lambda r: r.width() * r.height())
      shape = predictor(img, rect)
      lm = np.array([[shape.part(k).y, shape.part(k).x] for k in range(NUM_LANDMARKS)], np.int64)
      boxes[i] = (rect.top(), rect.left(), rect.bottom(), rect.right())
      source[i] = BOX_SOURCES.index("dlib")
      if np.all(lm >= 0):   # a landmark off the image: kept as a box only
        landmarks[i] = lm
        frontal[i] = is_frontal(lm)
    else:
      box = keypoint_box(keypoints)
      if box is not None:
        boxes[i] = box
        source[i] = BOX_SOURCES.index("keypoints")
    if logger is not None and ((i + 1) % 100 == 0 or i + 1 == n):
      logger(f"faces: {i + 1}/{n} images")
  meta = {"detector": f"dlib HOG frontal face detector, upsample {upsample}, largest face",
          "landmarks": f"dlib 68-point shape predictor ({os.path.basename(model_path)}; iBUG 300-W, "
                       "non-commercial)",
          "frontal": f"|yaw proxy| <= {FRONTAL_MAX_YAW} (hpt_jax/input_pipeline/faces.py)",
          "fallback": "OpenPose-18 nose/eyes/ears box (no landmarks, never frontal)",
          "dlib": getattr(dlib, "__version__", "?")}
  return FaceCache(names=[name for name, _, _ in images], boxes=boxes, box_source=source, landmarks=landmarks,
                   frontal=frontal, meta=meta)


# --------------------------------------------------------------------------- face pairs
@dataclasses.dataclass(frozen=True)
class FacePair:
  """A pair whose two images are frontal (:func:`face_pairs`); ``mirror_source``: the source crop
  is mirrored (a training self-pair: an image's mirrored crop → its own crop)."""

  example: Any                 # patn_format.PairExample
  source_landmarks: np.ndarray
  target_landmarks: np.ndarray
  mirror_source: bool = False


def face_pairs(examples: Sequence[Any], cache: FaceCache) -> list[FacePair]:
  """The face pairs (both images frontal in ``cache``) among PATN pair examples, in order."""
  out = []
  for e in examples:
    s, t = cache.frontal_landmarks(e.source_path), cache.frontal_landmarks(e.target_path)
    if s is not None and t is not None:
      out.append(FacePair(e, s, t))
  return out


def pair_arrays(source_image: Image.Image, source_landmarks: np.ndarray | None,
                target_landmarks: np.ndarray | None, box_scale: float) -> dict[str, np.ndarray]:
  """The face module's inputs for one pair (the same function in training and inference).

  Args:
    source_image: RGB PIL source image, stored frame.
    source_landmarks, target_landmarks: float [68, 2] frontal landmarks, or None.
    box_scale: :func:`crop_box`'s.

  Returns:
    ``source_face`` float32 [64, 64, 3] in [-1, 1], ``target_sketch`` float32 [64, 64, 1] in
    [0, 1], ``target_box`` int32 [4] (B_F, stored frame), ``face_pair`` bool — False (zeros,
    box -1) unless both landmark sets are given.
  """
  if source_landmarks is None or target_landmarks is None:
    return {"source_face": np.zeros((CROP_SIZE, CROP_SIZE, 3), np.float32),
            "target_sketch": np.zeros((CROP_SIZE, CROP_SIZE, 1), np.float32),
            "target_box": np.full(4, -1, np.int32), "face_pair": np.bool_(False)}
  target_box = crop_box(target_landmarks, box_scale)
  return {"source_face": crop_face(source_image, crop_box(source_landmarks, box_scale)),
          "target_sketch": draw_sketch(target_landmarks, target_box),
          "target_box": target_box, "face_pair": np.bool_(True)}


class FacePairLoader:
  """``load(index, flip)`` → one training element of a face pair, for
  :func:`hpt_jax.input_pipeline.pipeline.batched_dataset`: ``source_face``, ``target_face``
  (float32 [64, 64, 3] in [-1, 1]) and ``target_sketch`` (float32 [64, 64, 1]). ``flip`` mirrors
  all three (a mirrored face with its mirrored sketch is a valid pair); a ``mirror_source`` pair's
  source crop is mirrored once more."""

  def __init__(self, pairs: Sequence[FacePair], box_scale: float):
    self._pairs = list(pairs)
    self._box_scale = float(box_scale)

  def load(self, index: int, flip: bool) -> dict[str, np.ndarray]:
    p = self._pairs[index]
    arrays = pair_arrays(p.example.open("source"), p.source_landmarks, p.target_landmarks, self._box_scale)
    source_face = arrays["source_face"][:, ::-1] if p.mirror_source else arrays["source_face"]
    element = {"source_face": source_face, "target_sketch": arrays["target_sketch"],
               "target_face": crop_face(p.example.open("target"), arrays["target_box"])}
    if flip:
      element = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in element.items()}
    return element

r"""Pose transfer for anyone's photo: a source photo into a target pose, or a pose sequence into video.

::

    from hpt_jax import inference, transfer
    model = inference.load(None, "runs/drn_cpu")                 # any family (hpt_jax.registry)
    result = transfer.transfer(model, "me.jpg", "pose.json")     # a keypoint file, photo, folder or video
    result.images[0]                                             # uint8 [256, 176, 3] at the stored size
    transfer.write_outputs(result, "out.png")                    # one PNG; a sequence: out.gif + out.mp4

``launch/transfer.py`` is the command line for :func:`run`; ``docs/transfer.md`` has the user's
view. The steps, each a public function:

1. **Read** the source photo (:func:`load_photo`: EXIF orientation applied, grayscale / palette /
   16-bit / CMYK converted to 8-bit RGB, transparency composited on white) and the target: a
   keypoint file (:mod:`hpt_jax.keypoint_files`), a photo, a folder of photos or keypoint files
   (frames in name order) or a video (:func:`read_targets`).
2. **Estimate** the keypoints of photos with MediaPipe BlazePose and its person detector
   (:class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator` with ``person_detector``;
   Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", arXiv:2006.10204,
   2020): the largest person is used, and the others are reported. No person, or fewer than
   :data:`MIN_JOINTS` joints, raises :class:`NoPersonError`.
3. **Frame** each person like DeepFashion's studio crops (:func:`person_crop`): a box at the
   model's stored aspect (176/256 for DeepFashion) around the joints, with ``margin`` × the joints'
   height above and below (0.12; DeepFashion's full-body images have their joints between rows
   22 and 228 of 256), centred horizontally, white outside the photo. :class:`Crop` maps
   keypoints and images between the photo and the stored frame, and back (``paste_back``).
4. **Retarget** the target skeleton to the source person (:func:`retarget`): one similarity
   (scale, shift) for the whole sequence that gives the target the source's torso length
   (shoulders–hips) and torso centre, from the median over the frames, so the figure fills the
   frame as the source does and its motion is kept.
5. **Generate** with the restored model (:meth:`hpt_jax.inference.PoseTransferModel.generate`, any
   family) and optionally map each result back into the source photo (:meth:`Crop.paste`).
6. **Write** (:func:`write_outputs`): one target → a PNG; a sequence → a GIF and an MP4 (pose-guided
   video as in HPN §4.5: Liu et al., "Pose-Guided High-Resolution Appearance Transfer via
   Progressive Training", arXiv:2008.11898, 2020), with ``imageio`` and the ffmpeg of
   ``imageio-ffmpeg``. ``panel`` adds source (with its estimated skeleton) | target skeleton |
   result.

The models were trained on DeepFashion's white studio backgrounds: the source's background is
measured (:func:`background_darkness`, from BlazePose's person segmentation) and a warning is given
above :data:`BACKGROUND_WARNING_LEVEL`; ``remove_background`` composites the person on white with
that segmentation first (:func:`composite_on_white`).

Errors about the user's input derive from :class:`hpt_jax.errors.UserError` and name the file.
Imports nothing from ``hpt_jax.train`` and no TensorFlow (TF Lite runs in ``ai_edge_litert``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from hpt_jax import errors, image_io, keypoint_files, pose
from hpt_jax.input_pipeline import patn_format

#: A person needs at least this many joints (of 18) to be transferred.
MIN_JOINTS = 6
#: Default margin of :func:`person_crop`, as a fraction of the joints' height.
DEFAULT_MARGIN = 0.12
#: Mean darkness (255 − value, averaged over the background pixels and channels) above which the
#: source's background counts as far from a white studio backdrop. The 105 sampled DeepFashion
#: sample images measure 14 (median), 47 (90th percentile); a uniform grey of 200 measures 55.
BACKGROUND_WARNING_LEVEL = 60.0
#: Photo file extensions (anything PIL reads is accepted for a single source or target).
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: Video file extensions read frame by frame with imageio's ffmpeg reader.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: Frames per second of videos made from a folder (a video target keeps its own rate).
DEFAULT_FPS = 8.0

_R_SHOULDER, _L_SHOULDER, _NECK, _R_HIP, _L_HIP = 2, 5, 1, 8, 11


class PhotoError(patn_format.DataError):
  """A photo cannot be read (missing, not an image, unsupported mode); the message names the file."""


class NoPersonError(errors.UserError, ValueError):
  """No person, or fewer than :data:`MIN_JOINTS` joints, in a photo or keypoint file; the message
  names the file and what was found."""


class RetargetError(errors.UserError, ValueError):
  """The source or target lacks the torso joints retargeting needs; the message names them."""


class TargetError(errors.UserError, ValueError):
  """The target is no keypoint file, photo, folder or video, or a folder holds none; names it."""


class OptionError(errors.UserError, ValueError):
  """Options that cannot be used together (names them and what to drop)."""


# =============================================================================== photos
def to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL image → 8-bit RGB: transparency (RGBA, LA, PA, palette or ``transparency`` info)
  composited on white, grayscale and palette expanded, 16-bit (``I;16*``, ``I``) scaled by
  255/65535, float (``F``) taken as [0, 1] when its maximum is at most 1 (else [0, 255]), CMYK /
  YCbCr / LAB converted."""
  mode = image.mode
  if mode.startswith("I;16") or mode == "I":
    a = np.asarray(image, np.float64)
    if mode != "I" or a.max(initial=0) > 255:
      a = a * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)).convert("RGB")
  if mode == "F":
    a = np.asarray(image, np.float64)
    a = a * 255.0 if a.max(initial=0) <= 1.0 else a
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)).convert("RGB")
  if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def load_photo(path: str | os.PathLike) -> np.ndarray:
  """Reads a photo as it is displayed: uint8 ``[H, W, 3]`` RGB.

  The EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), then :func:`to_rgb`. Any size
  and aspect; for a multi-frame file (GIF, TIFF) the first frame.

  Raises:
    PhotoError: naming the file: missing, or not a readable image.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as image:
      image.load()
      image = ImageOps.exif_transpose(image) or image
      return np.asarray(to_rgb(image)).copy()
  except FileNotFoundError:
    raise PhotoError(path, None, "photo not found") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise PhotoError(path, None, f"not a readable image ({type(e).__name__}: {e})") from None


# =============================================================================== framing
@dataclasses.dataclass(frozen=True)
class Crop:
  """An axis-aligned box of a photo at the stored aspect, mapped onto the stored frame.

  Coordinates are continuous photo pixels (pixel ``i`` spans ``[i, i + 1)``, so a keypoint at
  index ``y`` sits at ``y + 0.5``); the box may extend past the photo (white there).

  Attributes:
    top, left: the box's upper-left corner in photo pixels (floats, may be negative).
    height, width: its size in photo pixels; ``width / height = W / H`` of ``stored_size``.
    stored_size: (H, W) of the stored frame (``model.stored_size``, 256×176 for DeepFashion).
  """
  top: float
  left: float
  height: float
  width: float
  stored_size: tuple[int, int]

  @property
  def scale(self) -> float:
    """Stored pixels per photo pixel."""
    return self.stored_size[0] / self.height

  def to_stored(self, keypoints: np.ndarray) -> np.ndarray:
    """Photo keypoints ``[..., 18, 2]`` (y, x) → stored-frame keypoints (−1 kept): ``(k + 0.5 −
    corner) · scale − 0.5``. May lie outside the frame."""
    kp = np.asarray(keypoints, np.float32)
    out = (kp + 0.5 - np.array([self.top, self.left], np.float32)) * np.float32(self.scale) - 0.5
    return np.where(pose.present_mask(kp)[..., None], out, np.float32(pose.MISSING)).astype(np.float32)

  def to_photo(self, keypoints: np.ndarray) -> np.ndarray:
    """The inverse of :meth:`to_stored`."""
    kp = np.asarray(keypoints, np.float32)
    out = (kp + 0.5) / np.float32(self.scale) + np.array([self.top, self.left], np.float32) - 0.5
    return np.where(pose.present_mask(kp)[..., None], out, np.float32(pose.MISSING)).astype(np.float32)

  def crop(self, photo: np.ndarray, fill: float = 255) -> np.ndarray:
    """The box resampled to the stored size (PIL bicubic with its antialiasing filter when
    shrinking), ``fill`` outside the photo.

    Args:
      photo: uint8 ``[h, w, 3]`` image, or float32 ``[h, w]`` map (e.g. a segmentation; bilinear).
      fill: value outside the photo (white for images).

    Returns:
      the same dtype, ``[H, W(, 3)]`` of ``stored_size``.
    """
    arr = np.asarray(photo)
    is_map = arr.ndim == 2
    img = Image.fromarray(arr.astype(np.float32) if is_map else arr)       # mode 'F' or 'RGB'
    x0, y0 = math.floor(self.left), math.floor(self.top)
    x1, y1 = math.ceil(self.left + self.width), math.ceil(self.top + self.height)
    canvas = Image.new(img.mode, (x1 - x0, y1 - y0), fill if is_map else (int(fill),) * 3)
    canvas.paste(img, (-x0, -y0))
    h, w = self.stored_size
    box = (self.left - x0, self.top - y0, self.left - x0 + self.width, self.top - y0 + self.height)
    out = canvas.resize((w, h), Image.Resampling.BILINEAR if is_map else Image.Resampling.BICUBIC, box=box)
    return np.asarray(out, np.float32 if is_map else np.uint8).copy()

  def paste(self, image: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Maps a stored-frame image back into the box of the photo (``--paste_back``).

    Every photo pixel whose centre lies inside the box takes the bicubic sample of ``image`` at
    its stored-frame position; the rest of the photo is kept.

    Args:
      image: uint8 ``[H, W, 3]`` at ``stored_size``.
      photo: uint8 ``[h, w, 3]``, the photo the box belongs to.

    Returns:
      uint8 ``[h, w, 3]``, a new array.
    """
    out = np.array(photo, np.uint8, copy=True)
    ph, pw = out.shape[:2]
    x0 = max(0, math.ceil(self.left - 0.5))
    y0 = max(0, math.ceil(self.top - 0.5))
    x1 = min(pw, math.floor(self.left + self.width - 0.5) + 1)
    y1 = min(ph, math.floor(self.top + self.height - 0.5) + 1)
    if x1 <= x0 or y1 <= y0:
      return out
    s = self.scale
    # PIL AFFINE: output (x, y) (continuous) → input (s·x + c, s·y + f); output x ↔ photo x0 + x.
    patch = Image.fromarray(np.asarray(image, np.uint8)).transform(
        (x1 - x0, y1 - y0), Image.Transform.AFFINE, (s, 0.0, (x0 - self.left) * s, 0.0, s, (y0 - self.top) * s),
        resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    out[y0:y1, x0:x1] = np.asarray(patch)
    return out


def person_crop(keypoints: np.ndarray, stored_size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Crop:
  """The DeepFashion-like crop of a person (module docstring, step 3).

  The box spans the present joints' rows with ``margin`` × their height added above and below,
  and is widened (about the joints' horizontal centre) to the stored aspect; if the joints plus a
  ``margin`` × height border on each side are wider than that, the box grows in both directions
  about its centre instead.

  Args:
    keypoints: float ``[18, 2]`` or ``[N, 18, 2]`` (y, x) photo pixels, −1 = missing; for several
      poses (a sequence in one frame) the box covers all of them.
    stored_size: (H, W) of the stored frame.
    margin: fraction of the joints' height added above and below (and at the sides).

  Returns:
    a :class:`Crop`.

  Raises:
    ValueError: no present joint.
  """
  kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
  kp = kp[pose.present_mask(kp)] + 0.5                         # continuous coordinates
  if not len(kp):
    raise ValueError("person_crop needs at least one present joint")
  (ymin, xmin), (ymax, xmax) = kp.min(0), kp.max(0)
  h, w = stored_size
  aspect = w / h
  span = max(ymax - ymin, 1.0)
  top, bottom = ymin - margin * span, ymax + margin * span
  height = bottom - top
  needed_width = (xmax - xmin) + 2 * margin * span
  if needed_width > height * aspect:
    centre = (top + bottom) / 2
    height = needed_width / aspect
    top = centre - height / 2
  width = height * aspect
  return Crop(top=float(top), left=float((xmin + xmax) / 2 - width / 2), height=float(height),
              width=float(width), stored_size=(int(h), int(w)))


# =============================================================================== retargeting
def torso(keypoints: np.ndarray, kind: str = "torso") -> tuple[float, np.ndarray] | None:
  """The size and centre retargeting matches, or None when the joints are missing.

  Args:
    keypoints: float ``[18, 2]`` (y, x) pixels, −1 = missing.
    kind: ``'torso'``: the distance from the shoulders' mean (the neck if no shoulder) to the
      hips' mean, centre halfway; ``'shoulders'``: the shoulder width, centre between them (for
      poses without hips).

  Returns:
    ``(size in pixels, centre float64 [2] (y, x))`` or None.
  """
  kp = np.asarray(keypoints, np.float64)
  present = pose.present_mask(kp)
  if kind == "torso":
    top = [kp[j] for j in (_R_SHOULDER, _L_SHOULDER) if present[j]] or ([kp[_NECK]] if present[_NECK] else [])
    bottom = [kp[j] for j in (_R_HIP, _L_HIP) if present[j]]
    if not top or not bottom:
      return None
    a, b = np.mean(top, 0), np.mean(bottom, 0)
  elif kind == "shoulders":
    if not (present[_R_SHOULDER] and present[_L_SHOULDER]):
      return None
    a, b = kp[_R_SHOULDER], kp[_L_SHOULDER]
  else:
    raise ValueError(f"kind must be 'torso' or 'shoulders', got {kind!r}")
  size = float(np.linalg.norm(a - b))
  return (size, (a + b) / 2) if size >= 1.0 else None


def retarget(target_keypoints: np.ndarray, source_keypoints: np.ndarray,
             stored_size: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
  """Moves a target skeleton (or a sequence of them) onto the source person (module doc, step 4).

  One similarity for all frames: ``k' = (k − c_t) · s_src / s_t + c_src``, where ``s`` is
  :func:`torso` size and ``c`` its centre, ``s_t`` and ``c_t`` the medians over the frames that
  have them. The torso length is used when the source and at least half the frames have it, else
  the shoulder width.

  Args:
    target_keypoints: float ``[18, 2]`` or ``[N, 18, 2]`` (y, x), −1 = missing, in the stored frame.
    source_keypoints: float ``[18, 2]`` of the source, same frame.
    stored_size: (H, W); if given, joints moved outside the frame become missing (−1), as PATN
      treats joints outside its crop.

  Returns:
    ``(keypoints of the target's shape, float32, a one-line description)``.

  Raises:
    RetargetError: neither measure is available in both (names what is missing).
  """
  tgt = np.asarray(target_keypoints, np.float32)
  frames = tgt.reshape(-1, pose.NUM_JOINTS, 2)
  for kind in ("torso", "shoulders"):
    src = torso(source_keypoints, kind)
    found = [m for m in (torso(f, kind) for f in frames) if m is not None]
    if src is None or 2 * len(found) < len(frames):
      continue
    scale = src[0] / float(np.median([m[0] for m in found]))
    centre = np.median(np.stack([m[1] for m in found]), axis=0)
    out = (frames - centre.astype(np.float32)) * np.float32(scale) + src[1].astype(np.float32)
    present = pose.present_mask(frames)
    outside = np.zeros_like(present)
    if stored_size is not None:
      h, w = stored_size
      outside = present & ((out[..., 0] < 0) | (out[..., 0] > h - 1) | (out[..., 1] < 0) | (out[..., 1] > w - 1))
    out = np.where((present & ~outside)[..., None], out, np.float32(pose.MISSING)).astype(np.float32)
    what = "torso length (shoulders–hips)" if kind == "torso" else "shoulder width"
    text = f"retargeted by the {what}: scale {scale:.2f}"
    if outside.any():
      n = int(outside.sum())
      text += f"; {n} joint{'s' if n != 1 else ''} moved outside the frame {'were' if n != 1 else 'was'} dropped"
    return out.reshape(tgt.shape), text
  raise RetargetError("cannot retarget the target pose to the source person: retargeting needs a shoulder or "
                      "the neck and a hip (or both shoulders) in the source and in at least half the target "
                      "frames; pass --no_retarget to use the target's own framing")


# =============================================================================== poses
@dataclasses.dataclass
class PoseInput:
  """One person's pose, from a photo or a keypoint file.

  Attributes:
    name: the file (with ``frame N`` for video frames), for messages.
    keypoints: float32 ``[18, 2]`` (y, x) pixels of ``frame_size``, −1 = missing.
    frame_size: (H, W) of the image the keypoints belong to; None = the stored frame (keypoint
      files that record no size and whose joints fit in it).
    photo: uint8 ``[H, W, 3]`` when read from a photo, else None.
    segmentation: float32 ``[H, W]`` person probability of the photo, when estimated with it.
    notes: what was chosen on the way (people found, file format).
  """
  name: str
  keypoints: np.ndarray
  frame_size: tuple[int, int] | None = None
  photo: np.ndarray | None = None
  segmentation: np.ndarray | None = None
  notes: list[str] = dataclasses.field(default_factory=list)


def _joint_list(keypoints: np.ndarray) -> str:
  present = pose.present_mask(keypoints)
  return ", ".join(pose.JOINT_NAMES[k] for k in np.flatnonzero(present)) or "none"


def check_joints(keypoints: np.ndarray, name: str, min_joints: int = MIN_JOINTS) -> None:
  """Raises :class:`NoPersonError` naming ``name`` and the joints found when fewer than
  ``min_joints`` of the 18 are present."""
  n = int(pose.present_mask(keypoints).sum())
  if n < min_joints:
    raise NoPersonError(f"{name}: only {n} of 18 joints found ({_joint_list(keypoints)}); at least {min_joints} "
                        "are needed (the person's head, shoulders and hips)")


def estimate_photo_pose(photo: np.ndarray, name: str, estimator, *, segmentation: bool = False,
                        min_joints: int = MIN_JOINTS) -> PoseInput:
  """Keypoints of the largest person in a photo (module docstring, step 2).

  Args:
    photo: uint8 ``[H, W, 3]``.
    name: the file, for messages.
    estimator: a :class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator` built with
      ``person_detector=True``.
    segmentation: also keep the person segmentation (``PoseInput.segmentation``).
    min_joints: fewer present joints raise.

  Raises:
    NoPersonError: the detector finds no one (``"<name>: no person found (…)"``) or fewer than
      ``min_joints`` joints are found (names them).
  """
  found = estimator.estimate_person(photo, segmentation=segmentation)
  h, w = photo.shape[:2]
  if found.num_people is not None and found.detection is None:
    raise NoPersonError(f"{name}: no person found (MediaPipe's person detector found no one in the {h}x{w} photo)")
  check_joints(found.keypoints, name, min_joints)
  notes = []
  if found.num_people and found.num_people > 1:
    cy, cx = found.detection.hip_centre
    notes.append(f"{name}: {found.num_people} people found; using the largest (hips at y={cy:.0f}, x={cx:.0f})")
  return PoseInput(name=name, keypoints=found.keypoints, frame_size=(h, w), photo=photo,
                   segmentation=found.segmentation, notes=notes)


class Estimator:
  """Builds the MediaPipe estimator (with the person detector) on first use, so keypoint-only runs
  never load TF Lite. ``models_dir``: see :class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator`."""

  def __init__(self, models_dir: str | None = None, estimator=None):
    self.models_dir = models_dir
    self._estimator = estimator

  def __call__(self):
    if self._estimator is None:
      from hpt_jax.metrics import pose_estimator
      self._estimator = pose_estimator.MediaPipePoseEstimator(self.models_dir, person_detector=True)
    return self._estimator


def read_keypoint_pose(path: str, *, confidence_threshold: float = keypoint_files.DEFAULT_CONFIDENCE_THRESHOLD) -> PoseInput:
  """A :class:`PoseInput` from a keypoint file (:func:`hpt_jax.keypoint_files.read_keypoint_file`).

  Raises:
    hpt_jax.keypoint_files.KeypointFileError: a bad file (names the file and row).
  """
  kf = keypoint_files.read_keypoint_file(path, confidence_threshold=confidence_threshold)
  return PoseInput(name=os.fspath(path), keypoints=kf.keypoints, frame_size=kf.image_size,
                   notes=[f"{path}: {kf.note}"] if kf.note and "people" in kf.note else [])


def _is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@contextlib.contextmanager
def no_fork_warning():
  """Silences JAX's warning about ``os.fork()`` while imageio starts its ffmpeg process (the child
  runs ffmpeg at once, so the warning's deadlock cannot happen)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    yield


def _imageio():
  """``imageio.v2`` with its ffmpeg plugin, or :class:`hpt_jax.errors.MissingDependencyError` naming
  the ``video`` extra."""
  try:
    import imageio.v2 as imageio
    import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary for MP4 and video targets)
  except ImportError as e:
    raise errors.missing_extra("video targets and GIF/MP4 output", "video", e) from e
  return imageio


def _video_frames(path: str, frame_step: int, max_frames: int | None):
  """(frames uint8 list, fps of the kept frames) from a video file (imageio's ffmpeg reader)."""
  imageio = _imageio()
  try:
    with no_fork_warning():
      reader = imageio.get_reader(path, format="FFMPEG")
  except FileNotFoundError:
    raise TargetError(f"{path}: video not found") from None
  except (OSError, RuntimeError, ValueError) as e:
    raise TargetError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
  try:
    fps = float(reader.get_meta_data().get("fps") or DEFAULT_FPS)
    frames = []
    for i, frame in enumerate(reader):        # decoded by the ffmpeg process started above
      if i % frame_step == 0:
        frames.append(np.asarray(frame, np.uint8)[..., :3])
        if max_frames is not None and len(frames) >= max_frames:
          break
  except (OSError, RuntimeError) as e:
    raise TargetError(f"{path}: cannot decode the video ({type(e).__name__}: {e})") from None
  finally:
    reader.close()
  if not frames:
    raise TargetError(f"{path}: the video has no frames")
  return frames, fps / frame_step


def read_targets(target: str, estimator: Callable[[], Any], *,
                 confidence_threshold: float = keypoint_files.DEFAULT_CONFIDENCE_THRESHOLD, frame_step: int = 1,
                 max_frames: int | None = None) -> tuple[list[PoseInput], bool, float | None]:
  """The target poses: a keypoint file or photo (one pose), or a folder or video (a sequence).

  A folder's photos and keypoint files (:data:`PHOTO_EXTENSIONS`, ``.json``, ``.csv``; hidden files
  and others skipped) are frames in name order; a video's frames are read with imageio's ffmpeg
  reader (every ``frame_step``-th, at most ``max_frames``). In a sequence, a frame without a person
  or with fewer than :data:`MIN_JOINTS` joints is skipped with a note.

  Args:
    target: path of the file, folder or video.
    estimator: called (no arguments) for the pose estimator when a photo needs keypoints.
    confidence_threshold: for OpenPose JSON files.
    frame_step, max_frames: for videos (and folders: every ``frame_step``-th file, at most
      ``max_frames``).

  Returns:
    ``(poses, is_sequence, fps)``: fps is the video's (divided by ``frame_step``), else None.

  Raises:
    TargetError: nothing usable (names the path and what it held); KeypointFileError,
    PhotoError, NoPersonError for a single target.
  """
  target = os.fspath(target)
  if os.path.isdir(target):
    names = sorted(n for n in os.listdir(target) if not n.startswith(".")
                   and os.path.splitext(n)[1].lower() in PHOTO_EXTENSIONS + keypoint_files.EXTENSIONS)
    names = names[::frame_step][:max_frames]
    if not names:
      raise TargetError(f"{target}: the folder holds no photo ({', '.join(PHOTO_EXTENSIONS)}) or keypoint file "
                        f"({', '.join(keypoint_files.EXTENSIONS)})")
    poses, skipped = [], []
    for n in names:
      path = os.path.join(target, n)
      try:
        poses.append(_read_one(path, estimator, confidence_threshold))
      except NoPersonError as e:
        skipped.append(str(e))
    return _sequence(target, poses, skipped), True, None
  if not os.path.exists(target):
    raise TargetError(f"{target}: target not found (a keypoint file, a photo, a folder or a video)")
  if _is_video(target):
    frames, fps = _video_frames(target, frame_step, max_frames)
    poses, skipped = [], []
    for i, frame in enumerate(frames):
      try:
        poses.append(estimate_photo_pose(frame, f"{target} frame {i * frame_step}", estimator()))
      except NoPersonError as e:
        skipped.append(str(e))
    return _sequence(target, poses, skipped), True, fps
  return [_read_one(target, estimator, confidence_threshold)], False, None


def _sequence(target: str, poses: list[PoseInput], skipped: list[str]) -> list[PoseInput]:
  if not poses:
    raise TargetError(f"{target}: no frame has a usable pose ({len(skipped)} skipped; first: {skipped[0]})")
  if skipped:
    poses[0].notes.append(f"{target}: {len(skipped)} frames skipped (first: {skipped[0]})")
  return poses


def _read_one(path: str, estimator, confidence_threshold: float) -> PoseInput:
  if keypoint_files.is_keypoint_file(path):
    found = read_keypoint_pose(path, confidence_threshold=confidence_threshold)
    check_joints(found.keypoints, path)
    return found
  return estimate_photo_pose(load_photo(path), path, estimator())


def frame_targets(poses: Sequence[PoseInput], stored_size: tuple[int, int],
                  margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """Target keypoints in the stored frame, ``[N, 18, 2]``.

  Keypoints already in the stored frame (a file whose image size is the stored size, or which
  records none and whose joints all fit in it, e.g. PATN rows) are kept. Others are framed by
  :func:`person_crop`: one box for all frames when they share a frame size (a video, keypoint
  files of one video, photos of one size), so motion is kept; otherwise one box per frame.
  """
  h, w = stored_size
  out = np.zeros((len(poses), pose.NUM_JOINTS, 2), np.float32)
  todo = []
  for i, p in enumerate(poses):
    kp = np.asarray(p.keypoints, np.float32)
    present = pose.present_mask(kp)
    fits = bool(np.all((kp[present] >= 0) & (kp[present] <= np.array([h - 1, w - 1]))))
    if (p.frame_size is None and fits) or (p.frame_size is not None and tuple(p.frame_size) == (h, w)):
      out[i] = kp
    else:
      todo.append(i)
  if todo:
    sizes = {poses[i].frame_size for i in todo}
    if len(sizes) == 1:
      crop = person_crop(np.stack([poses[i].keypoints for i in todo]), stored_size, margin)
      out[todo] = crop.to_stored(np.stack([poses[i].keypoints for i in todo]))
    else:
      for i in todo:
        out[i] = person_crop(poses[i].keypoints, stored_size, margin).to_stored(poses[i].keypoints)
  return out


# =============================================================================== background
def background_darkness(image: np.ndarray, person: np.ndarray) -> float | None:
  """How far a photo's background is from white: the mean of 255 − value over the channels of
  the pixels whose person probability is below 0.5; None when under 5% of the pixels are
  background. DeepFashion's studio backgrounds: median 14 (:data:`BACKGROUND_WARNING_LEVEL`).

  Args:
    image: uint8 ``[H, W, 3]``. person: float ``[H, W]`` person probability in [0, 1].
  """
  bg = np.asarray(person) < 0.5
  if bg.sum() < 0.05 * bg.size:
    return None
  return float(np.mean(255.0 - np.asarray(image, np.float32)[bg]))


def composite_on_white(photo: np.ndarray, person: np.ndarray) -> np.ndarray:
  """Composites the person on white with the soft segmentation as alpha: ``α·photo + (1 − α)·255``.

  Args:
    photo: uint8 ``[H, W, 3]``. person: float ``[H, W]`` in [0, 1] (BlazePose segmentation).

  Returns:
    uint8 ``[H, W, 3]``.
  """
  alpha = np.clip(np.asarray(person, np.float32), 0, 1)[..., None]
  return np.clip(np.round(alpha * photo + (1 - alpha) * 255.0), 0, 255).astype(np.uint8)


# =============================================================================== transfer
@dataclasses.dataclass
class TransferInputs:
  """What :func:`prepare` read: the source pose (with its photo) and the target poses."""
  source: PoseInput
  targets: list[PoseInput]
  sequence: bool
  fps: float | None


@dataclasses.dataclass
class TransferResult:
  """What :func:`generate` made.

  Attributes:
    images: uint8 ``[H, W, 3]`` per target frame: the stored frame, or the source photo's frame with
      ``paste_back``.
    panels: uint8 ``[H, 3W, 3]`` per frame (source with its skeleton | target skeleton | result, in
      the stored frame) with ``panel``, else None.
    source_image: uint8 ``[H, W, 3]``, the source's stored-frame crop the model saw.
    source_keypoints: float32 ``[18, 2]`` stored-frame keypoints of the source.
    target_keypoints: float32 ``[N, 18, 2]`` stored-frame target keypoints as generated.
    crop: the source's :class:`Crop` in its photo.
    sequence: a sequence (GIF + MP4) rather than one image.
    fps: frames per second for a sequence.
    names: each frame's target (file or video frame).
    notes: one-line remarks for the user (people found, retargeting, background, skipped frames).
  """
  images: list[np.ndarray]
  panels: list[np.ndarray] | None
  source_image: np.ndarray
  source_keypoints: np.ndarray
  target_keypoints: np.ndarray
  crop: Crop
  sequence: bool
  fps: float
  names: list[str]
  notes: list[str]


def prepare(source, target, *, source_keypoints: str | None = None, estimator: Estimator | None = None,
            remove_background: bool = False, confidence_threshold: float = keypoint_files.DEFAULT_CONFIDENCE_THRESHOLD,
            frame_step: int = 1, max_frames: int | None = None) -> TransferInputs:
  """Reads the source and target and estimates their poses (no model needed: input errors come
  before the model is loaded).

  Args:
    source: path of the source photo, or a uint8 ``[H, W, 3]`` photo.
    target: path of a keypoint file, photo, folder or video (:func:`read_targets`), or float
      keypoints ``[18, 2]`` / ``[N, 18, 2]`` in the stored frame.
    source_keypoints: a keypoint file for the source instead of estimating them (no segmentation
      then: no background check).
    estimator: the pose estimator holder (default: built on first use from the default models dir).
    remove_background: keep the source's segmentation to composite it on white.
    confidence_threshold: OpenPose JSON joint confidence threshold.
    frame_step, max_frames: for folder and video targets.

  Raises:
    PhotoError, KeypointFileError, NoPersonError, TargetError, OptionError (all
    :class:`hpt_jax.errors.UserError`), hpt_jax.metrics.pose_estimator.ModelNotFoundError (the models
    are not fetched).
  """
  estimator = estimator or Estimator()
  name = source if isinstance(source, (str, os.PathLike)) else "source photo"
  photo = load_photo(source) if isinstance(source, (str, os.PathLike)) else np.asarray(source, np.uint8)
  if source_keypoints is not None:
    src = read_keypoint_pose(os.fspath(source_keypoints), confidence_threshold=confidence_threshold)
    check_joints(src.keypoints, os.fspath(source_keypoints))
    src = dataclasses.replace(src, name=os.fspath(name), photo=photo, frame_size=photo.shape[:2])
  else:
    src = estimate_photo_pose(photo, os.fspath(name), estimator(), segmentation=True)
  if isinstance(target, (str, os.PathLike)):
    targets, sequence, fps = read_targets(os.fspath(target), estimator, confidence_threshold=confidence_threshold,
                                          frame_step=frame_step, max_frames=max_frames)
  else:
    kp = np.asarray(target, np.float32)
    if kp.shape[-2:] != (pose.NUM_JOINTS, 2):
      raise ValueError(f"target keypoints must be [18, 2] or [N, 18, 2], got {kp.shape}")
    sequence = kp.ndim == 3
    targets = [PoseInput(name=f"target keypoints {i}", keypoints=k) for i, k in enumerate(kp.reshape(-1, 18, 2))]
    fps = None
  if remove_background and src.segmentation is None:
    raise OptionError("--remove_background needs the source's segmentation: let the estimator find the "
                        "source keypoints (drop --source_keypoints)")
  return TransferInputs(source=src, targets=targets, sequence=sequence, fps=fps)


def generate(model, inputs: TransferInputs, *, retarget_pose: bool = True, panel: bool = False,
             paste_back: bool = False, remove_background: bool = False, margin: float = DEFAULT_MARGIN,
             fps: float | None = None) -> TransferResult:
  """Frames the source and targets for ``model``, retargets, generates (module docstring, 3–5).

  Args:
    model: a restored :class:`hpt_jax.inference.PoseTransferModel` (any family).
    inputs: from :func:`prepare`.
    retarget_pose: :func:`retarget` the targets to the source (default); False keeps each target's
      own framing (:func:`frame_targets`).
    panel: also make source | target skeleton | result panels.
    paste_back: map each result into the source photo (:meth:`Crop.paste`).
    remove_background: composite the source person on white first (:func:`composite_on_white`).
    margin: :func:`person_crop` margin.
    fps: a sequence's frame rate (default: the video's, else :data:`DEFAULT_FPS`).

  Returns:
    a :class:`TransferResult`.

  Raises:
    RetargetError: retargeting impossible (names what is missing).
  """
  stored = tuple(model.stored_size)
  src = inputs.source
  notes = list(src.notes) + [n for t in inputs.targets for n in t.notes]
  photo = src.photo
  if remove_background:
    photo = composite_on_white(photo, src.segmentation)
  crop = person_crop(src.keypoints, stored, margin)
  source_image = crop.crop(photo)
  source_kp = crop.to_stored(src.keypoints)
  if src.segmentation is not None and not remove_background:
    darkness = background_darkness(source_image, crop.crop(src.segmentation, fill=0.0))
    if darkness is not None and darkness > BACKGROUND_WARNING_LEVEL:
      notes.append(f"{src.name}: the background is far from the white studio backgrounds the models were trained "
                   f"on ({darkness:.0f} levels below white on average; DeepFashion: 14); expect artefacts, or "
                   "pass --remove_background")
  targets = frame_targets(inputs.targets, stored, margin)
  if retarget_pose:
    targets, how = retarget(targets, source_kp, stored)
    notes.append(how)
  n = len(targets)
  out = model.generate(np.repeat(source_image[None], n, 0), np.repeat(source_kp[None], n, 0), targets)
  generated = [np.asarray(x, np.uint8) for x in out["image"]]
  panels = None
  if panel:
    left = image_io.draw_skeleton(source_image, source_kp)
    panels = [np.concatenate([left, image_io.draw_skeleton(None, t, stored), g], axis=1)
              for t, g in zip(targets, generated)]
  images = [crop.paste(g, src.photo) for g in generated] if paste_back else generated
  return TransferResult(images=images, panels=panels, source_image=source_image, source_keypoints=source_kp,
                        target_keypoints=targets, crop=crop, sequence=inputs.sequence,
                        fps=float(fps or inputs.fps or DEFAULT_FPS), names=[t.name for t in inputs.targets],
                        notes=notes)


def transfer(model, source, target, *, source_keypoints: str | None = None, retarget_pose: bool = True,
             panel: bool = False, paste_back: bool = False, remove_background: bool = False,
             margin: float = DEFAULT_MARGIN, confidence_threshold: float = keypoint_files.DEFAULT_CONFIDENCE_THRESHOLD,
             fps: float | None = None, frame_step: int = 1, max_frames: int | None = None,
             models_dir: str | None = None, estimator=None) -> TransferResult:
  """:func:`prepare` then :func:`generate`: the notebook entry point (module docstring).

  ``estimator``: a ready :class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator` (built
  with ``person_detector=True``) to reuse across calls; default one from ``models_dir``. Other
  arguments as in :func:`prepare` and :func:`generate`.
  """
  inputs = prepare(source, target, source_keypoints=source_keypoints, estimator=Estimator(models_dir, estimator),
                   remove_background=remove_background, confidence_threshold=confidence_threshold,
                   frame_step=frame_step, max_frames=max_frames)
  return generate(model, inputs, retarget_pose=retarget_pose, panel=panel, paste_back=paste_back,
                  remove_background=remove_background, margin=margin, fps=fps)


# =============================================================================== writing
def _even(frames: list[np.ndarray]) -> np.ndarray:
  """Stacks frames, padding with white to even height and width (H.264 with 4:2:0 chroma needs it)."""
  arr = np.stack(frames)
  h, w = arr.shape[1:3]
  return np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


def write_video(path: str, frames: list[np.ndarray], fps: float) -> str:
  """Writes an MP4 (H.264, yuv420p, the ffmpeg binary of ``imageio-ffmpeg``) or GIF (looping;
  Pillow) by the extension of ``path``; returns the path."""
  imageio = _imageio()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.lower().endswith(".gif"):
    imageio.mimwrite(path, np.stack(frames), format="GIF", duration=1000.0 / fps, loop=0)
    return path
  with no_fork_warning():
    writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                ffmpeg_log_level="error")
    try:
      for frame in _even(frames):
        writer.append_data(frame)
    finally:
      writer.close()
  return path


def write_outputs(result: TransferResult, output: str) -> list[str]:
  """Writes a :class:`TransferResult`; returns the paths written.

  One target: ``output`` as an image (``.png`` added when it has no extension). A sequence:
  ``<stem>.gif`` and ``<stem>.mp4`` (``<stem>`` = ``output`` without a ``.gif``, ``.mp4`` or
  ``.png`` extension). With panels, the same names with ``_panel`` before the extension.
  """
  output = os.fspath(output)
  base, ext = os.path.splitext(output)
  written = []
  if not result.sequence:
    ext = ext or ".png"
    for suffix, frames in (("", result.images), ("_panel", result.panels)):
      if frames is not None:
        path = f"{base}{suffix}{ext}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        Image.fromarray(frames[0]).save(path)
        written.append(path)
    return written
  if ext.lower() not in (".gif", ".mp4", ".png", ""):
    base = output
  for suffix, frames in (("", result.images), ("_panel", result.panels)):
    if frames is not None:
      written += [write_video(f"{base}{suffix}.gif", frames, result.fps),
                  write_video(f"{base}{suffix}.mp4", frames, result.fps)]
  return written


def run(config, workdir: str, source: str, target: str, output: str, *, step: int | None = None,
        level: int | None = None, batch_size: int | None = None, log: Callable[[str], Any] = print,
        **options) -> tuple[TransferResult, list[str]]:
  """The command line's work (``launch/transfer.py``): read and estimate the inputs, restore the
  model (:func:`hpt_jax.inference.load`; ``config`` None = the run's ``config.json``), generate,
  write. ``options``: the keyword arguments of :func:`transfer` except the model. ``log`` gets the
  notes and the paths written. Returns the result and the paths."""
  from hpt_jax import inference
  prep_keys = ("source_keypoints", "remove_background", "confidence_threshold", "frame_step", "max_frames")
  prep = {k: options.pop(k) for k in prep_keys if k in options}
  estimator = Estimator(options.pop("models_dir", None), options.pop("estimator", None))
  inputs = prepare(source, target, estimator=estimator, **prep)
  model = inference.load(config, workdir, step=step, level=level, batch_size=batch_size)
  result = generate(model, inputs, remove_background=prep.get("remove_background", False), **options)
  for note in result.notes:
    log(f"note: {note}")
  paths = write_outputs(result, output)
  for p in paths:
    log(f"wrote {p}")
  return result, paths

"""Keypoint files: one pose of one person, read from OpenPose JSON, a PATN CSV row or hpt-jax JSON.

Every reader returns a :class:`KeypointFile`: float32 ``[18, 2]`` (y, x) pixel keypoints in
OpenPose-18 order (:data:`hpt_jax.pose.JOINT_NAMES`), ``(-1, -1)`` = missing, and the (H, W) of the
image they belong to when the file records it. Bad files raise :class:`KeypointFileError` (a
:class:`hpt_jax.errors.UserError` and ``ValueError``), whose message names the file and the row or
field at fault and what was expected.

Formats (:func:`read_keypoint_file` picks one by extension and content):

* **OpenPose JSON** (``*.json`` with a ``people`` list; Cao et al., "OpenPose: Realtime
  Multi-Person 2D Pose Estimation using Part Affinity Fields", IEEE TPAMI, 2019, arXiv:1812.08008;
  the ``--write_json`` output of the OpenPose demo): ``people[i].pose_keypoints_2d`` is a flat list
  ``[x0, y0, c0, x1, y1, c1, …]`` in pixels with confidences ``c`` in [0, 1]; 18 joints (COCO-18,
  the same order as OpenPose-18) or 25 (BODY_25: :data:`BODY_25_TO_OPENPOSE_18` drops the mid-hip
  and the six foot points). A joint whose confidence is 0 or below ``confidence_threshold`` is
  missing. With several people the largest (bounding box of its present joints) is taken, or
  ``people[person]``. OpenPose records no image size.
* **PATN CSV row** (``*.csv``): ``NAME: [18 y]: [18 x]`` as in PATN's annotation files
  (:mod:`hpt_jax.input_pipeline.patn_format`; Zhu et al., "Progressive Pose Attention Transfer for Person
  Image Generation", CVPR 2019, arXiv:1904.03349), optionally under the header
  ``name:keypoints_y:keypoints_x``; exactly one data row; ``-1`` = missing. Coordinates are those
  of the stored 256×176 DeepFashion images; no image size is recorded.
* **hpt-jax JSON** (``*.json`` with ``"format": "hpt_jax-keypoints"``), written by
  :func:`write_keypoints_json`::

      {"format": "hpt_jax-keypoints", "version": 1,
       "image_size": [H, W],                     # pixels of the image the keypoints belong to; optional
       "keypoints": [[y, x], … 18 pairs]}        # OpenPose-18 order; [-1, -1] or null = missing

  or ``"keypoints": {"nose": [y, x], "neck": [y, x], …}`` by the names of
  :data:`hpt_jax.pose.JOINT_NAMES` (a joint not named is missing). Coordinates are (y, x) =
  (row, column) pixels, pixel ``i`` centred at ``i``.

Imports only numpy and the PATN reader (no JAX, no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from hpt_jax import pose
from hpt_jax.input_pipeline import patn_format

#: ``format`` field of hpt-jax keypoint JSON files.
FORMAT = "hpt_jax-keypoints"
VERSION = 1

#: BODY_25 index of each OpenPose-18 joint (BODY_25: 0 nose, 1 neck, 2–4 right arm, 5–7 left arm,
#: 8 mid-hip, 9–11 right leg, 12–14 left leg, 15/16 right/left eye, 17/18 right/left ear, 19–24
#: feet). COCO-18 files are already in OpenPose-18 order.
BODY_25_TO_OPENPOSE_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)

#: File extensions read as keypoint files (anything else in a target folder is read as a photo).
EXTENSIONS = (".json", ".csv")

#: Default OpenPose confidence below which a joint counts as missing.
DEFAULT_CONFIDENCE_THRESHOLD = 0.1


class KeypointFileError(patn_format.DataError):
  """A keypoint file cannot be read or has the wrong content; the message names the file, the row
  (CSV line, or JSON field such as ``people[0].pose_keypoints_2d``) and what was expected."""

  def __init__(self, path, where: int | str | None, message: str):
    if isinstance(where, str):
      super().__init__(path, None, f"{where}: {message}")
    else:
      super().__init__(path, where, message)


@dataclasses.dataclass(frozen=True)
class KeypointFile:
  """One pose read from a keypoint file.

  Attributes:
    keypoints: float32 ``[18, 2]`` (y, x) pixels, OpenPose-18 order, (-1, -1) = missing.
    image_size: (H, W) pixels of the image the keypoints belong to, or None (not recorded).
    path: the file.
    format: ``'openpose'``, ``'patn'`` or ``'hpt_jax'``.
    note: what the reader chose (e.g. which of several people), or ``''``.
  """
  keypoints: np.ndarray
  image_size: tuple[int, int] | None
  path: str
  format: str
  note: str = ""


def is_keypoint_file(path: str | os.PathLike) -> bool:
  """True for the extensions of :data:`EXTENSIONS` (case-insensitive)."""
  return os.path.splitext(os.fspath(path))[1].lower() in EXTENSIONS


def read_keypoint_file(path: str | os.PathLike, *, confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
                       person: int | None = None) -> KeypointFile:
  """Reads one pose from an OpenPose JSON, a PATN CSV row or an hpt-jax JSON file (module docstring).

  Args:
    path: the file (``.json`` or ``.csv``).
    confidence_threshold: OpenPose JSON only: joints with a confidence below this (or 0) are missing.
    person: OpenPose JSON only: index into ``people`` (default: the largest person).

  Returns:
    a :class:`KeypointFile`.

  Raises:
    KeypointFileError: naming the file and row/field: unreadable, unknown format, wrong joint count,
      non-numeric or non-finite values, no people, several CSV rows.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    return read_patn_row(path)
  if ext != ".json":
    raise KeypointFileError(path, None, f"not a keypoint file (expected one of {', '.join(EXTENSIONS)})")
  data = _load_json(path)
  if isinstance(data, dict) and "people" in data:
    return _openpose(path, data, confidence_threshold, person)
  if isinstance(data, dict) and data.get("format") == FORMAT:
    return _hpt_jax(path, data)
  keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
  raise KeypointFileError(path, None, f"unknown keypoint JSON (top level {keys}): expected OpenPose's "
                          f"{{'people': [{{'pose_keypoints_2d': [...]}}]}} or {{'format': '{FORMAT}', ...}}")


def _load_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise KeypointFileError(path, None, "file not found") from None
  except (OSError, UnicodeDecodeError) as e:
    raise KeypointFileError(path, None, f"cannot read ({type(e).__name__}: {e})") from None
  except json.JSONDecodeError as e:
    raise KeypointFileError(path, e.lineno, f"not valid JSON ({e.msg}, column {e.colno})") from None


def _numbers(values, path: str, where: str) -> np.ndarray:
  if not isinstance(values, list) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
    raise KeypointFileError(path, where, "expected a list of finite numbers")
  return np.asarray(values, np.float32)


def _openpose(path: str, data: dict, threshold: float, person: int | None) -> KeypointFile:
  people = data["people"]
  if not isinstance(people, list) or not people:
    raise KeypointFileError(path, "people", "no people in the file (an empty list)")
  poses = []
  for i, p in enumerate(people):
    where = f"people[{i}].pose_keypoints_2d"
    if not isinstance(p, dict) or "pose_keypoints_2d" not in p:
      raise KeypointFileError(path, f"people[{i}]", "has no pose_keypoints_2d")
    flat = _numbers(p["pose_keypoints_2d"], path, where)
    if flat.size not in (18 * 3, 25 * 3):
      raise KeypointFileError(path, where, f"{flat.size} values: expected 54 (18 joints × (x, y, confidence), "
                              f"COCO-18) or 75 (25 joints, BODY_25)")
    xyc = flat.reshape(-1, 3)
    if len(xyc) == 25:
      xyc = xyc[list(BODY_25_TO_OPENPOSE_18)]
    kp = np.stack([xyc[:, 1], xyc[:, 0]], -1)
    missing = (xyc[:, 2] <= 0) | (xyc[:, 2] < threshold)
    kp[missing] = pose.MISSING
    poses.append(kp.astype(np.float32))
  fmt = "BODY_25" if np.asarray(people[0]["pose_keypoints_2d"]).size == 75 else "COCO-18"
  if person is not None:
    if not 0 <= person < len(poses):
      raise KeypointFileError(path, "people", f"person {person} asked for, the file has {len(poses)}")
    return KeypointFile(poses[person], None, path, "openpose", f"OpenPose {fmt}, people[{person}]")
  if len(poses) == 1:
    return KeypointFile(poses[0], None, path, "openpose", f"OpenPose {fmt}")
  sizes = [_bbox_area(kp) for kp in poses]
  k = int(np.argmax(sizes))
  return KeypointFile(poses[k], None, path, "openpose",
                      f"OpenPose {fmt}: {len(poses)} people, took the largest (people[{k}])")


def _bbox_area(kp: np.ndarray) -> float:
  present = pose.present_mask(kp)
  if not present.any():
    return 0.0
  span = kp[present].max(0) - kp[present].min(0)
  return float(span[0] * span[1]) + 1e-3 * float(present.sum())


def read_patn_row(path: str | os.PathLike) -> KeypointFile:
  """Reads a PATN annotation CSV holding one data row (header optional); see the module docstring.

  Raises:
    KeypointFileError: naming the file and line: unreadable, not ``NAME: [18 y]: [18 x]``, a joint
      count other than 18, or not exactly one data row.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    raise KeypointFileError(path, None, "file not found") from None
  except (OSError, UnicodeDecodeError) as e:
    raise KeypointFileError(path, None, f"cannot read ({type(e).__name__}: {e})") from None
  rows = []
  for line_no, text in enumerate(lines, start=1):
    if not text.strip():
      continue
    if line_no == 1 and tuple(c.strip() for c in text.split(":")) == patn_format.ANNOTATION_HEADER:
      continue
    try:
      rows.append((line_no, *patn_format._parse_annotation_row(text, 0)))   # the training reader's row parser
    except ValueError as e:
      raise KeypointFileError(path, line_no, f"bad PATN annotation row: {e}") from None
  if len(rows) != 1:
    raise KeypointFileError(path, None, f"{len(rows)} annotation rows: a keypoint file holds one pose "
                            "(NAME: [18 y]: [18 x]); copy the row you want into a file of its own")
  line_no, name, kp = rows[0]
  return KeypointFile(kp, None, path, "patn", f"PATN row {name!r} (line {line_no})")


def _hpt_jax(path: str, data: dict) -> KeypointFile:
  if data.get("version") != VERSION:
    raise KeypointFileError(path, "version", f"{data.get('version')!r}: expected {VERSION}")
  size = data.get("image_size")
  if size is not None:
    size_arr = _numbers(size, path, "image_size")
    if size_arr.shape != (2,) or np.any(size_arr <= 0) or np.any(size_arr != np.round(size_arr)):
      raise KeypointFileError(path, "image_size", f"{size!r}: expected [H, W], two positive integers")
    size = (int(size_arr[0]), int(size_arr[1]))
  raw = data.get("keypoints")
  kp = np.full((pose.NUM_JOINTS, 2), pose.MISSING, np.float32)
  if isinstance(raw, dict):
    unknown = sorted(set(raw) - set(pose.JOINT_NAMES))
    if unknown:
      raise KeypointFileError(path, "keypoints", f"unknown joint names {unknown}: expected names from "
                              f"{', '.join(pose.JOINT_NAMES)}")
    items = [(pose.JOINT_NAMES.index(name), name, value) for name, value in raw.items()]
  elif isinstance(raw, list):
    if len(raw) != pose.NUM_JOINTS:
      raise KeypointFileError(path, "keypoints", f"{len(raw)} joints: expected {pose.NUM_JOINTS} [y, x] "
                              "pairs in OpenPose-18 order (or a {name: [y, x]} object)")
    items = [(k, f"keypoints[{k}]", value) for k, value in enumerate(raw)]
  else:
    raise KeypointFileError(path, "keypoints", "missing: expected 18 [y, x] pairs or {name: [y, x]}")
  for k, where, value in items:
    if value is None:
      continue
    yx = _numbers(value, path, f"keypoints.{where}" if isinstance(raw, dict) else where)
    if yx.shape != (2,):
      raise KeypointFileError(path, where, f"{value!r}: expected [y, x]")
    if not np.all(yx == pose.MISSING):
      kp[k] = yx
  kp[~pose.present_mask(kp)] = pose.MISSING
  return KeypointFile(kp, size, path, "hpt_jax")


def write_keypoints_json(path: str | os.PathLike, keypoints: np.ndarray, image_size: tuple[int, int] | None = None,
                         *, names: bool = False) -> str:
  """Writes one pose as hpt-jax keypoint JSON (module docstring); returns the path.

  Args:
    path: the file to write.
    keypoints: float ``[18, 2]`` (y, x) pixels, -1 = missing.
    image_size: (H, W) of the image the keypoints belong to, or None.
    names: write ``{name: [y, x]}`` (present joints only) instead of the 18-pair list.

  Raises:
    ValueError: keypoints not of shape ``[18, 2]`` or not finite.
  """
  kp = np.asarray(keypoints, np.float64)
  if kp.shape != (pose.NUM_JOINTS, 2) or not np.all(np.isfinite(kp)):
    raise ValueError(f"keypoints must be finite [18, 2], got {kp.shape}")
  present = pose.present_mask(kp)
  pairs = [[round(float(y), 3), round(float(x), 3)] if p else [-1, -1] for (y, x), p in zip(kp, present)]
  record = {"format": FORMAT, "version": VERSION,
            "image_size": None if image_size is None else [int(image_size[0]), int(image_size[1])],
            "keypoints": ({n: v for n, v, p in zip(pose.JOINT_NAMES, pairs, present) if p} if names else pairs)}
  path = os.fspath(path)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  return path

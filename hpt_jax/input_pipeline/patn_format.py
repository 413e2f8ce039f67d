"""Readers for PATN's DeepFashion file format (annotation CSV, pairs CSV, JPEG images).

File format (PATN — Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation",
CVPR 2019, arXiv:1904.03349; code tengteng95/Pose-Transfer @ 281ee2d
``tool/generate_fashion_datasets.py``, ``tool/create_pairs_dataset.py``, ``data/keypoint.py``;
hpt_jax/data/README.md):

* **Annotation CSV** (``fasion-resize-annotation-*.csv``, ``annotation.csv`` of the vendored sample):
  first line ``name:keypoints_y:keypoints_x``; every other line ``NAME: [18 ints]: [18 ints]``,
  separator ``:``, each list JSON, OpenPose-18 order, ``-1`` = missing joint.
* **Pairs CSV** (``fasion-resize-pairs-*.csv``, ``pairs*.csv``): header ``from,to``, one ordered
  (source, target) pair of image names per line.
* **Images**: ``<images_dir>/<NAME>``, RGB JPEG, 256×176 (H×W) for the PATN crop. Uncropped
  256×256 In-shop images with ``keypoint_x_offset=-40`` are read centre-cropped to columns 40–215
  (:meth:`PairExample.open`), never resized.

**The official test set.** Its annotations (``fasion-annotation-test.csv``) are in 256×256
coordinates; with ``keypoint_x_offset=-40``, 19 rows have a joint outside the 176-wide crop (34 of
the 8,570 pairs use them). Such joints become missing joints, counted in
:attr:`BadExampleReport.out_of_crop` and logged once, so all 8,570 pairs load.

Keypoints returned here follow :mod:`hpt_jax.pose`: float32 ``[18, 2]`` (y, x) pixels, ``-1`` =
missing. Bad input raises :class:`DataError`, whose message names the file and the line at fault;
:func:`load_pair_examples` can instead skip bad examples and count them (``skip_bad=True``).
Line numbers are 1-based and count the header (the first data row is line 2).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from hpt_jax import errors, pose

ANNOTATION_HEADER = ("name", "keypoints_y", "keypoints_x")
PAIRS_HEADER = ("from", "to")

# Reasons counted in BadExampleReport.counts.
UNANNOTATED_IMAGE = "unannotated_image"            # (a) pair names an image with no annotation row
BAD_ANNOTATION_ROW = "bad_annotation_row"          # (b) unparsable row / not 18 y and 18 x values
KEYPOINT_OUTSIDE_IMAGE = "keypoint_outside_image"  # (c) present joint outside the image (after offset)
MISSING_IMAGE = "missing_image"                    # (d) image file does not exist
UNREADABLE_IMAGE = "unreadable_image"              # (e) not a readable image, or of the wrong size
BAD_PAIR_ROW = "bad_pair_row"                      # pairs row without exactly two names

_MAX_MESSAGES = 20


class DataError(errors.UserError, ValueError):
  """Bad input data; the message always names the file and, where there is one, the line.

  Attributes:
    path: the file at fault (str).
    line: 1-based line number in ``path`` (the header is line 1), or None for a whole-file or
      image-content fault (the message then names the pairs-file line that uses the image, where
      known).
    message: the message without the ``path, line N:`` prefix.
  """

  def __init__(self, path: str | os.PathLike, line: int | None, message: str):
    self.path = os.fspath(path)
    self.line = line
    self.message = message
    where = self.path if line is None else f"{self.path}, line {line}"
    super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class PairExample:
  """One (source, target) training/eval pair.

  Attributes:
    source_path: path of the source image file.
    target_path: path of the target image file.
    source_keypoints: float32 ``[18, 2]`` (y, x) pixels in the stored source image, -1 = missing.
    target_keypoints: float32 ``[18, 2]`` (y, x) pixels in the stored target image, -1 = missing.
    row: 1-based line number of the pair in the pairs CSV (header = line 1).
    stored_size: (H, W) of the stored frame the keypoints are in (``data.stored_size``), or None
      (the image files' own size).
    source_crop_x, target_crop_x: left column of the stored frame in each image file: 0, or
      ``-keypoint_x_offset`` for an uncropped 256×256 In-shop image read as PATN's 256×176 crop
      (columns 40–215).
  """
  source_path: str
  target_path: str
  source_keypoints: np.ndarray
  target_keypoints: np.ndarray
  row: int
  stored_size: tuple[int, int] | None = None
  source_crop_x: int = 0
  target_crop_x: int = 0

  def open(self, side: str) -> Image.Image:
    """The ``'source'`` or ``'target'`` image as RGB PIL, in the stored frame (cropped if needed).

    Raises:
      DataError: naming the file: missing, undecodable, or not of the size checked at load time.
    """
    if side == "source":
      return open_stored_image(self.source_path, self.stored_size, self.source_crop_x)
    if side == "target":
      return open_stored_image(self.target_path, self.stored_size, self.target_crop_x)
    raise ValueError(f"side must be 'source' or 'target', got {side!r}")


@dataclasses.dataclass
class BadExampleReport:
  """What :func:`load_pair_examples` skipped with ``skip_bad=True``.

  Attributes:
    counts: reason -> number of bad records (annotation rows for ``bad_annotation_row`` and
      ``keypoint_outside_image``; image files for ``missing_image`` and ``unreadable_image``; pair
      rows for ``unannotated_image`` and ``bad_pair_row``). Reasons are the module constants.
    skipped_pairs: number of pairs dropped (each pair is charged to the first fault found).
    messages: the first few error messages (each names file and line).
  """
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped_pairs: int = 0
  messages: list[str] = dataclasses.field(default_factory=list)
  #: image name -> (annotation line, joint indices) of joints inside the uncropped annotation frame
  #: but outside the stored crop: kept as missing joints, not skipped (PATN renders them as empty
  #: heatmaps).
  out_of_crop: dict = dataclasses.field(default_factory=dict)
  #: pairs whose source or target has such joints (set by :func:`load_pair_examples`).
  out_of_crop_pairs: int = 0

  def add(self, reason: str, error: DataError) -> None:
    """Counts one bad record under ``reason`` and keeps its message (the first few only)."""
    self.counts[reason] += 1
    if len(self.messages) < _MAX_MESSAGES:
      self.messages.append(str(error))

  @property
  def total(self) -> int:
    """Number of bad records of all reasons."""
    return sum(self.counts.values())

  def summary(self) -> str:
    """One line for the log, e.g. ``'skipped 3 pairs; bad records: missing_image=1'``."""
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) or "none"
    return f"skipped {self.skipped_pairs} pairs; bad records: {reasons}"

  def out_of_crop_summary(self, keypoint_x_offset: float, width: int) -> str:
    """One line for the log about :attr:`out_of_crop` (empty string if there are none)."""
    if not self.out_of_crop:
      return ""
    joints = sum(len(j) for _, j in self.out_of_crop.values())
    return (f"{joints} joints in {len(self.out_of_crop)} annotation rows lie outside the {width}-wide crop "
            f"(keypoint_x_offset={keypoint_x_offset:g}): kept as missing joints, as PATN's heatmaps render "
            f"nothing for them; {self.out_of_crop_pairs} pairs use these rows")


# ----------------------------------------------------------------------------- annotations


def _parse_joint_list(text: str) -> list[float]:
  values = json.loads(text)
  if not isinstance(values, list) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
    raise ValueError("not a JSON list of numbers")
  return values


def _parse_annotation_row(text: str, keypoint_x_offset: float) -> tuple[str, np.ndarray]:
  """Parses ``NAME: [ys]: [xs]``; raises ValueError with a short reason."""
  parts = text.split(":")
  if len(parts) != 3:
    raise ValueError(f"expected 3 ':'-separated fields (name:keypoints_y:keypoints_x), "
                     f"got {len(parts)}")
  name = parts[0].strip()
  if not name:
    raise ValueError("empty image name")
  try:
    ys, xs = _parse_joint_list(parts[1]), _parse_joint_list(parts[2])
  except ValueError as e:  # json.JSONDecodeError is a ValueError
    raise ValueError(f"cannot parse keypoint lists ({e})") from None
  if len(ys) != pose.NUM_JOINTS or len(xs) != pose.NUM_JOINTS:
    raise ValueError(f"expected {pose.NUM_JOINTS} y and {pose.NUM_JOINTS} x values, "
                     f"got {len(ys)} and {len(xs)}")
  keypoints = np.stack([ys, xs], axis=-1).astype(np.float32)
  present = pose.present_mask(keypoints)
  keypoints[~present] = pose.MISSING
  keypoints[present, 1] += keypoint_x_offset
  return name, keypoints


def _read_annotation_rows(path, keypoint_x_offset, image_size, skip_bad, report):
  """Returns ({name: (keypoints, line)}, {name of a skipped row: line})."""
  rows, skipped = {}, {}
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not lines or tuple(c.strip() for c in lines[0].split(":")) != ANNOTATION_HEADER:
    raise DataError(path, 1, f"expected header {':'.join(ANNOTATION_HEADER)!r}, "
                    f"got {lines[0] if lines else ''!r}")
  for line_no, text in enumerate(lines[1:], start=2):
    if not text.strip():
      continue
    reason = BAD_ANNOTATION_ROW
    try:
      name, keypoints = _parse_annotation_row(text, 0)
      if name in rows:
        raise ValueError(f"duplicate image name {name!r} (first on line {rows[name][1]})")
      present = pose.present_mask(keypoints)
      if image_size is not None and keypoint_x_offset < 0:
        reason = KEYPOINT_OUTSIDE_IMAGE
        h, w = image_size
        # The annotation frame: the stored crop widened by -offset on both sides (PATN's centre
        # crop of the 256-wide In-shop images: offset -40, 176 + 2·40 = 256).
        pose.validate_keypoints(keypoints, h, w - 2 * keypoint_x_offset)
      keypoints[present, 1] += keypoint_x_offset
      if image_size is not None and keypoint_x_offset >= 0:
        reason = KEYPOINT_OUTSIDE_IMAGE
        pose.validate_keypoints(keypoints, *image_size)      # no crop: the frame is the stored image
      elif image_size is not None:
        outside = present & ((keypoints[:, 1] < 0) | (keypoints[:, 1] >= image_size[1]))
        if outside.any():
          keypoints[outside] = pose.MISSING
          report.out_of_crop[name] = (line_no, [int(j) for j in np.flatnonzero(outside)])
    except ValueError as e:
      where = ((f" (keypoint_x_offset={keypoint_x_offset:g}; the annotation frame is the config's "
                f"data.stored_size" + (f" widened by {-keypoint_x_offset:g} columns on each side)"
                                       if keypoint_x_offset < 0 else ")"))
               if reason == KEYPOINT_OUTSIDE_IMAGE else "")
      error = DataError(path, line_no, f"bad annotation row: {e}{where}")
      if not skip_bad:
        raise error from None
      report.add(reason, error)
      bad_name = text.split(":", 1)[0].strip()
      if bad_name not in rows:
        skipped.setdefault(bad_name, line_no)
      continue
    rows[name] = (keypoints, line_no)
  return rows, skipped


def read_annotations(path: str | os.PathLike, keypoint_x_offset: float = 0,
                     image_size: tuple[int, int] | None = None, *, skip_bad: bool = False,
                     report: BadExampleReport | None = None) -> dict[str, np.ndarray]:
  """Reads a PATN annotation CSV (``name:keypoints_y:keypoints_x``).

  Source: PATN ``tool/generate_fashion_datasets.py`` / ``data/keypoint.py`` (``sep=':'``, JSON
  lists).

  Args:
    path: the annotation CSV.
    keypoint_x_offset: pixels added to x of present joints (missing joints stay -1). The full
      release's 256×256 test annotations need -40 for the 176-wide crop; the resized train CSVs
      and the vendored sample need 0.
    image_size: (H, W) in pixels of the stored frame (``data.stored_size``); if given, rows are
      checked against the annotation frame. With a negative offset (a centre crop, e.g. −40 for
      PATN's 176-wide crop of the 256×256 In-shop images) that frame is ``H × (W − 2·offset)``:
      a joint outside it is an error, a joint inside it but outside the crop after the offset
      becomes a missing joint (−1, −1), as PATN's heatmaps render nothing for it, and is counted
      in ``report.out_of_crop``. Otherwise every present joint must lie in ``[0,H) x [0,W)``
      after the offset.
    skip_bad: skip bad rows (counted in ``report``) instead of raising.
    report: where skipped rows are counted (a new one is used if None).

  Returns:
    dict image name -> float32 ``[18, 2]`` (y, x) keypoints, -1 = missing (a joint with either
    coordinate -1 becomes (-1, -1)).

  Raises:
    DataError: naming the file and line, for a bad header, or (unless ``skip_bad``) a row that
      cannot be parsed, has not 18 y and 18 x values, repeats a name, or has a joint outside the
      image. OSError: the file cannot be opened.
  """
  report = report if report is not None else BadExampleReport()
  rows, _ = _read_annotation_rows(path, keypoint_x_offset, image_size, skip_bad, report)
  return {name: keypoints for name, (keypoints, _) in rows.items()}


# ----------------------------------------------------------------------------- pairs


def read_pairs(path: str | os.PathLike, *, skip_bad: bool = False,
               report: BadExampleReport | None = None) -> list[tuple[str, str, int]]:
  """Reads a PATN pairs CSV (header ``from,to``).

  Source: PATN ``tool/create_pairs_dataset.py``.

  Args:
    path: the pairs CSV.
    skip_bad: skip rows without exactly two non-empty names (counted in ``report``).
    report: where skipped rows are counted (a new one is used if None).

  Returns:
    list of ``(from_name, to_name, line)`` in file order; ``line`` is the 1-based line number
    (header = line 1).

  Raises:
    DataError: naming file and line, for a bad header or (unless ``skip_bad``) a bad row.
    OSError: the file cannot be opened.
  """
  report = report if report is not None else BadExampleReport()
  with open(path, encoding="utf-8", newline="") as f:
    lines = f.read().splitlines()
  if not lines or tuple(c.strip() for c in next(csv.reader(lines[:1]))) != PAIRS_HEADER:
    raise DataError(path, 1, f"expected header {','.join(PAIRS_HEADER)!r}, "
                    f"got {lines[0] if lines else ''!r}")
  pairs = []
  for line_no, text in enumerate(lines[1:], start=2):
    if not text.strip():
      continue
    fields = [c.strip() for c in next(csv.reader([text]))]
    if len(fields) != 2 or not all(fields):
      error = DataError(path, line_no, f"expected two image names 'from,to', got {text!r}")
      if not skip_bad:
        raise error
      report.add(BAD_PAIR_ROW, error)
      report.skipped_pairs += 1
      continue
    pairs.append((fields[0], fields[1], line_no))
  return pairs


# ----------------------------------------------------------------------------- images


def open_image(path: str | os.PathLike) -> Image.Image:
  """Opens and fully decodes an image file as RGB.

  Args:
    path: image file (any format PIL reads; PATN uses JPEG).

  Returns:
    a loaded ``PIL.Image.Image`` in mode ``'RGB'``.

  Raises:
    DataError: naming the file, if it is missing or cannot be decoded.
  """
  try:
    with Image.open(path) as image:
      return image.convert("RGB")
  except FileNotFoundError:
    raise DataError(path, None, "image file not found") from None
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(path, None, f"cannot decode image ({type(e).__name__}: {e})") from None


def open_stored_image(path: str | os.PathLike, stored_size: tuple[int, int] | None = None,
                      crop_x: int = 0) -> Image.Image:
  """:func:`open_image`, then columns ``[crop_x, crop_x + W)`` when the file is wider than the
  stored frame (an uncropped 256×256 In-shop image read as PATN's 256×176 crop).

  Args:
    path: image file. stored_size: (H, W) the result must have; None = the file's own size.
    crop_x: left column of the stored frame in the file (:class:`PairExample`).

  Raises:
    DataError: naming the file: missing, undecodable, or of another size than ``stored_size``
      (with ``crop_x``).
  """
  image = open_image(path)
  if stored_size is None or (image.height, image.width) == tuple(stored_size):
    return image
  h, w = stored_size
  if image.height != h or image.width < crop_x + w or not crop_x:
    raise DataError(path, None, f"image is {image.height}x{image.width} (HxW), expected {h}x{w} (the config's "
                    f"data.stored_size){f' or wider, cropped from column {crop_x}' if crop_x else ''}")
  return image.crop((crop_x, 0, crop_x + w, h))


def image_to_array(image: Image.Image) -> np.ndarray:
  """Converts an RGB PIL image to float32 ``[H, W, 3]`` in ``[-1, 1]`` (``x / 127.5 - 1``).

  Source: PATN ``data/keypoint.py`` (Normalize(0.5, 0.5)); RATE-Net ``data/keypoint_funit.py``.
  """
  return np.asarray(image, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def decode_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes an image file to float32 ``[H, W, 3]`` in ``[-1, 1]`` (RGB, ``x / 127.5 - 1``).

  Args:
    path: image file.
    size: optional (H, W) in pixels; a differently sized image is resized (PIL bilinear,
      antialiased when shrinking).

  Returns:
    float32 ``[H, W, 3]`` in ``[-1, 1]``.

  Raises:
    DataError: naming the file, if it is missing or cannot be decoded.
  """
  image = open_image(path)
  if size is not None and (image.height, image.width) != tuple(size):
    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
  return image_to_array(image)


def _check_image(path: str, image_size: tuple[int, int] | None, context: str, keypoint_x_offset: float = 0,
                 ) -> tuple[str, DataError | None, tuple[int, int] | None, int]:
  """Startup check of one image file: returns (reason, error or None, stored (H, W) or None, crop_x).

  The file must have the stored size ``image_size``, or — with a negative ``keypoint_x_offset`` —
  the uncropped annotation frame ``(H, W − 2·offset)``, which is then read centre-cropped from
  column ``crop_x = −offset`` (PATN's 256×176 crop of the 256×256 In-shop images).
  """
  if not os.path.isfile(path):
    return MISSING_IMAGE, DataError(path, None, f"image file not found ({context})"), None, 0
  try:
    with Image.open(path) as image:
      image.verify()
      width, height = image.size
  except Exception as e:  # PIL raises many exception types for corrupt files.  # pylint: disable=broad-except
    return UNREADABLE_IMAGE, DataError(
        path, None, f"not a readable image ({type(e).__name__}: {e}; {context})"), None, 0
  if image_size is None or (height, width) == tuple(image_size):
    return "", None, (height, width), 0
  crop = int(-keypoint_x_offset) if keypoint_x_offset < 0 else 0
  if crop and (height, width) == (image_size[0], image_size[1] + 2 * crop):
    return "", None, tuple(image_size), crop
  uncropped = (f" or {image_size[0]}x{image_size[1] + 2 * crop} (the annotation frame, read centre-cropped)"
               if crop else "")
  return UNREADABLE_IMAGE, DataError(
      path, None, f"image is {height}x{width} (HxW), expected {image_size[0]}x{image_size[1]} "
      f"(the config's data.stored_size){uncropped} for keypoint_x_offset={keypoint_x_offset:g} ({context})"), None, 0


def _check_pair_image(path, annotation, image_size, keypoint_x_offset, annotations_path, context):
  """Checks one referenced image and its keypoints: returns (None or (reason, DataError), (H, W), crop_x)."""
  reason, error, size, crop = _check_image(path, image_size, context, keypoint_x_offset)
  if error is not None:
    return (reason, error), None, 0
  keypoints, row = annotation
  try:
    pose.validate_keypoints(keypoints, *size)
  except ValueError as e:
    return (KEYPOINT_OUTSIDE_IMAGE, DataError(
        annotations_path, row, f"bad annotation row: {e} (keypoint_x_offset={keypoint_x_offset})"
    )), size, crop
  return None, size, crop


def load_pair_examples(images_dir: str | os.PathLike, annotations_path: str | os.PathLike,
                       pairs_path: str | os.PathLike, image_size: tuple[int, int] | None = None,
                       keypoint_x_offset: float = 0, skip_bad: bool = False,
                       image_path: Callable[[str], str] | None = None,
                       progress: Callable[[list], Any] | None = None,
                       ) -> tuple[list[PairExample], BadExampleReport]:
  """Reads and checks a PATN-format data set: annotations, pairs and every referenced image.

  Each image referenced by a pair is checked once at startup: it must exist, pass
  ``PIL.Image.open(...).verify()`` and have size ``image_size``. (``verify`` parses the file
  structure without decoding all pixels, so a truncated JPEG may only fail when it is decoded at
  run time; the pipeline's decode then raises :class:`DataError` naming the file.)

  Args:
    images_dir: directory holding the images named in the CSVs.
    annotations_path: annotation CSV (see :func:`read_annotations`).
    pairs_path: pairs CSV (see :func:`read_pairs`).
    image_size: (H, W) pixels of the **stored** images and of the annotation coordinates (after
      the offset), e.g. (256, 176) for PATN's DeepFashion crop. None: the size of the first
      readable image, which all others must then share. This need not be the size the networks
      see: :func:`hpt_jax.input_pipeline.pipeline.create_pair_dataset` resizes images and keypoints to its
      own ``image_size``.
    keypoint_x_offset: added to x of present joints (-40 for the full release's 256×256
      annotations with the 176-wide crop; 0 for the sample and PATN's resized CSVs).
    skip_bad: if True, bad examples are skipped and counted in the report instead of raising.
    image_path: maps an image name of the CSVs to its file; default ``images_dir/NAME``
      (``images_dir`` is then unused). The TFDS builder of the uncropped In-shop images uses it
      for the release's nested ``img/`` tree (:mod:`hpt_jax.input_pipeline.tfds_builders`).
    progress: wraps the list of pair rows for the checking loop, e.g. ``lambda rows: tqdm(rows)``
      for a progress bar with ETA (``launch/prepare_data.py``); None = no progress display.

  Returns:
    ``(examples, report)``: the valid pairs in pairs-file order, and what was skipped (the caller
    should log ``report.summary()`` when ``report.total``).

  Raises:
    DataError: naming the file and line, (unless ``skip_bad``) for: (a) a pair naming an image with
      no annotation row; (b) an unparsable annotation row or one without 18 y and 18 x values;
      (c) a present joint outside the image after the offset; (d) a missing image file; (e) an
      unreadable image or one of the wrong size. Also (always) for a bad CSV header or when no
      valid pair remains.
  """
  if image_path is None:
    image_path = lambda name: os.path.join(images_dir, name)  # noqa: E731
  report = BadExampleReport()
  annotations, skipped_rows = _read_annotation_rows(
      annotations_path, keypoint_x_offset, image_size, skip_bad, report)
  pairs = read_pairs(pairs_path, skip_bad=skip_bad, report=report)

  checked: dict[str, bool] = {}    # image name -> passed the image and keypoint checks
  crops: dict[str, int] = {}       # image name -> left column of the stored frame in the file
  examples = []
  for source, target, line in (pairs if progress is None else progress(pairs)):
    fault = None                   # (reason, error); reason None = bad record counted already
    for name in (source, target):
      if checked.get(name) is False or (name in skipped_rows and name not in annotations):
        fault = (None, None)
      elif name not in annotations:
        fault = (UNANNOTATED_IMAGE, DataError(
            pairs_path, line, f"image {name!r} has no row in {os.fspath(annotations_path)}"))
      elif name not in checked:
        fault, size, crops[name] = _check_pair_image(image_path(name), annotations[name], image_size,
                                                     keypoint_x_offset, annotations_path,
                                                     f"pair on line {line} of {os.fspath(pairs_path)}")
        checked[name] = fault is None
        if image_size is None and size is not None:
          image_size = size  # None: the first readable image fixes the stored size
      if fault is not None:
        break
    if fault is not None:
      reason, error = fault
      if not skip_bad:
        raise error  # without skip_bad the first fault of every record raises, so error is set
      if reason is not None:
        report.add(reason, error)
      report.skipped_pairs += 1
      continue
    examples.append(PairExample(
        source_path=image_path(source), target_path=image_path(target),
        source_keypoints=annotations[source][0], target_keypoints=annotations[target][0], row=line,
        stored_size=None if image_size is None else tuple(image_size),
        source_crop_x=crops.get(source, 0), target_crop_x=crops.get(target, 0)))
    if source in report.out_of_crop or target in report.out_of_crop:
      report.out_of_crop_pairs += 1
  if not examples:
    raise DataError(pairs_path, None, f"no valid pairs ({report.summary()}; first problems: "
                    f"{report.messages[:3]})")
  return examples, report

"""Reads the prepared TFDS pair data sets (ArrayRecord) for the grain pipelines, without TensorFlow.

``config.data.source='tfds'`` (``data.tfds_name``, ``data.tfds_dir``, ``data.split``) makes
:func:`hpt_jax.input_pipeline.pipeline.load_examples` return a :class:`TfdsPairs` instead of the
list of :class:`~hpt_jax.input_pipeline.patn_format.PairExample` read from folders. It is a lazy
sequence over ``tfds.data_source`` (an ``ArrayRecordDataSource``: random access by index,
picklable into grain's worker processes); item ``i`` is a :class:`TfdsPairExample` with the same
interface as ``PairExample`` (``open(side)`` gives the RGB PIL image decoded from the stored
bytes, ``source_keypoints``/``target_keypoints`` float32 ``[18, 2]``, ``row`` = the pairs-file
line). The DRN/HPN and DIAF pipelines index it like the folder list, so both sources give the
same elements in the same order for the same seed, shard per process and checkpoint the iterator
in the same way.

Data sets are written by :mod:`hpt_jax.input_pipeline.tfds_builders` (``launch/prepare_data.py``).
``tfds_dir`` is a local or mounted folder (NFS, gcsfuse). A ``gs://`` URL goes to
``etils.epath`` for the metadata (without TensorFlow it needs ``gcsfs``) and to ArrayRecord's own
GCS reader (array_record 0.8.6 has one; google/array_record#120): untested here, since no bucket
was reachable. Needs the ``tfds`` extra
(``tensorflow-datasets``, ``array_record``); TensorFlow is never imported.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from hpt_jax import errors
from hpt_jax.input_pipeline import patn_format


def _tfds():
  """Imports ``tensorflow_datasets`` and registers the builders; MissingDependencyError if absent."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from hpt_jax.input_pipeline import tfds_builders  # noqa: F401  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.missing_extra("config.data.source='tfds'", "tfds", e) from e
  return tfds, tfds_builders


@dataclasses.dataclass(frozen=True)
class TfdsPairExample:
  """One pair read from a prepared TFDS data set; the interface of ``patn_format.PairExample``.

  Attributes:
    source_path, target_path: ``tfds:<name>/<split>/<image name>`` — the image names of the CSVs
      (their stems name DIAF's ``.corr`` files, their basenames the evaluation's rows).
    source_keypoints, target_keypoints: float32 ``[18, 2]`` (y, x) stored-image pixels, -1 = missing.
    row: the pair's 1-based line in the released pairs CSV.
    stored_size: (H, W) every image must have.
    source_bytes, target_bytes: the encoded image files as released.
    person_id: outfit or identity id. pair_index: index in the split.
  """
  source_path: str
  target_path: str
  source_keypoints: np.ndarray
  target_keypoints: np.ndarray
  row: int
  stored_size: tuple[int, int]
  source_bytes: bytes = dataclasses.field(repr=False, default=b"")
  target_bytes: bytes = dataclasses.field(repr=False, default=b"")
  person_id: str = ""
  pair_index: int = 0

  def open(self, side: str) -> Image.Image:
    """The ``'source'`` or ``'target'`` image as RGB PIL (decoded from the stored bytes).

    Raises:
      patn_format.DataError: naming the example, if the bytes do not decode or have another size
        than ``stored_size``.
    """
    if side not in ("source", "target"):
      raise ValueError(f"side must be 'source' or 'target', got {side!r}")
    path = getattr(self, f"{side}_path")
    try:
      with Image.open(io.BytesIO(getattr(self, f"{side}_bytes"))) as image:
        image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise patn_format.DataError(path, None, f"cannot decode image ({type(e).__name__}: {e})") from None
    if (image.height, image.width) != tuple(self.stored_size):
      raise patn_format.DataError(path, None, f"image is {image.height}x{image.width} (HxW), expected "
                                  f"{self.stored_size[0]}x{self.stored_size[1]} (the data set's stored size)")
    return image


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TfdsPairs(Sequence):
  """The pairs of one split of a prepared TFDS data set, read lazily by index (picklable).

  Args:
    name: registered builder name with its config, e.g. ``'deepfashion_pose_transfer/crop_256x176'``
      or ``'market1501_pose_transfer'``.
    data_dir: the TFDS data folder it was prepared in (see the module docstring); '' = TFDS's default
      (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    split: a split or a TFDS slice (``'train'``, ``'test'``, ``'test_small'``, ``'train[:1000]'``).

  Raises:
    hpt_jax.errors.MissingDependencyError: ``tensorflow-datasets`` is not installed (the ``tfds`` extra).
    hpt_jax.errors.MissingFileError: the data set is not prepared in ``data_dir`` (the message says
      how to prepare it).
    hpt_jax.errors.ConfigError: an unknown name or split.
  """

  def __init__(self, name: str, data_dir: str | os.PathLike | None, split: str,
               _source: Any = None, _indices: range | None = None):
    self.name, self.data_dir, self.split = name, (os.fspath(data_dir) if data_dir else None), split
    if _source is None:
      tfds, builders = _tfds()
      try:
        builder = tfds.builder(name, data_dir=self.data_dir)
      except Exception as e:  # tfds raises DatasetNotFoundError, ValueError, ... for bad names
        raise errors.ConfigError(
            f"data.tfds_name={name!r}: {type(e).__name__}: {str(e).splitlines()[0]} (known: "
            f"{', '.join(f'{b.name}/{c.name}' for b in builders.BUILDERS.values() for c in b.BUILDER_CONFIGS)})"
        ) from None
      if not builder.is_prepared():
        dataset = next((k for k, b in builders.BUILDERS.items() if b.name == builder.name), "deepfashion")
        raise errors.MissingFileError(
            f"the TFDS data set {name!r} is not prepared in {os.fspath(builder.data_path)} (data.tfds_dir="
            f"{self.data_dir or ''!r}): run python launch/prepare_data.py --dataset={dataset} --manual_dir=DIR "
            f"--data_dir={self.data_dir or '~/tensorflow_datasets'}")
      try:
        _source = builder.as_data_source(split=split)
      except Exception as e:  # an unknown split or a bad slice
        raise errors.ConfigError(f"data.split={split!r} of {name!r}: {str(e).splitlines()[0]} "
                                 f"(splits: {', '.join(builder.info.splits)})") from None
      self.stored_size = tuple(int(s) for s in builder.builder_config.stored_size)
    self._source = _source
    self._indices = range(len(_source)) if _indices is None else _indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index):
    if isinstance(index, slice):
      view = TfdsPairs(self.name, self.data_dir, self.split, _source=self._source,
                       _indices=self._indices[index])
      view.stored_size = self.stored_size
      return view
    record = self._source[self._indices[int(index)]]
    where = f"tfds:{self.name}/{self.split}/"
    return TfdsPairExample(
        source_path=where + _text(record["source_name"]), target_path=where + _text(record["target_name"]),
        source_keypoints=np.asarray(record["source_keypoints"], np.float32),
        target_keypoints=np.asarray(record["target_keypoints"], np.float32),
        row=int(record["pairs_line"]), stored_size=self.stored_size,
        source_bytes=bytes(record["source_image"]), target_bytes=bytes(record["target_image"]),
        person_id=_text(record["person_id"]), pair_index=int(record["pair_index"]))

  def __repr__(self) -> str:
    return f"TfdsPairs({self.name!r}, data_dir={self.data_dir!r}, split={self.split!r}, {len(self)} pairs)"


def load_examples(data_config: Any, logger=None) -> TfdsPairs:
  """The ``source='tfds'`` branch of :func:`hpt_jax.input_pipeline.pipeline.load_examples`.

  Args:
    data_config: ``config.data``/``config.eval_data`` with ``tfds_name``, ``tfds_dir``, ``split``
      and ``stored_size`` (H, W), which must equal the data set's.
    logger: called with one line (e.g. ``logging.info``); None = silent.

  Returns:
    the split's pairs (a lazy :class:`TfdsPairs`).

  Raises:
    hpt_jax.errors.ConfigError: an empty ``tfds_name``, an unknown name or split, or a
      ``data.stored_size`` other than the data set's. And as :class:`TfdsPairs`.
  """
  if not data_config.tfds_name:
    raise errors.ConfigError("data.source='tfds' needs data.tfds_name (e.g. deepfashion_pose_transfer/crop_256x176; "
                             "launch/prepare_data.py prints the overrides)")
  pairs = TfdsPairs(data_config.tfds_name, data_config.tfds_dir or None, data_config.split)
  size = data_config.get("stored_size") if hasattr(data_config, "get") else getattr(data_config, "stored_size", None)
  if size is not None and tuple(int(s) for s in size) != pairs.stored_size:
    raise errors.ConfigError(
        f"data.stored_size={tuple(size)} but {data_config.tfds_name!r} stores {pairs.stored_size[0]}x"
        f"{pairs.stored_size[1]} images: set --config.data.stored_size={pairs.stored_size[0]},{pairs.stored_size[1]}")
  if logger is not None:
    logger(f"{pairs!r}")
  return pairs

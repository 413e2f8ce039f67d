"""Grain input pipeline for pose-transfer pairs (no TensorFlow).

Builds batches of (source image, target image, both 18-channel pose heatmaps, both keypoint sets)
from :class:`hpt_jax.input_pipeline.patn_format.PairExample` records, decoding JPEGs and rendering
heatmaps on the fly (:func:`hpt_jax.pose.keypoints_to_heatmaps`).

Train mode (as ``data/keypoint_funit.py`` of the RATE-Net code, Lotayou/Pose-Transfer @ 164c91b,
branch rate_net; paper: Yang et al., "Region-Adaptive Texture Enhancement for Detailed Person Image Synthesis",
ICME 2020, arXiv:2005.12486)::

  MapDataset.source(shard indices).seed(s).shuffle().repeat()      # infinite, reshuffled per epoch
    .random_map(load + random horizontal flip, p=0.5)               # same flip for P1, P2, BP1, BP2
    .to_iter_dataset(ReadOptions).batch(B, drop_remainder)          # [+ .mp_prefetch(workers)]

Eval mode: the same without shuffle, repeat and flip (one pass in file order).

Element order and flips are a deterministic function of ``seed`` and ``shard_index``: the
pipeline-level seed is derived from both, so processes draw independent flips.

Checkpointing the iterator with Orbax (grain 0.2.18 ``grain.checkpoint``; the handler writes
``process_<i>-of-<n>.json`` holding ``iterator.get_state()``)::

  import orbax.checkpoint as ocp
  it = iter(create_pair_dataset(...))
  mngr = ocp.CheckpointManager(directory)
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(train_state),
      data_iter=grain.checkpoint.CheckpointSave(it)))
  ...
  it = iter(create_pair_dataset(...))          # same arguments
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_train_state),
      data_iter=grain.checkpoint.CheckpointRestore(it)))   # calls it.set_state(...) in place
  it = restored.data_iter                       # the same object, positioned after `step`

Without Orbax: ``state = it.get_state()`` (a JSON-serialisable dict) and ``it.set_state(state)``
on a fresh iterator of an identically built dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from absl import flags
import grain
import numpy as np
from PIL import Image

from hpt_jax import errors, pose
from hpt_jax.input_pipeline import patn_format, tfds_source

BATCH_KEYS = ("source_image", "target_image", "source_pose", "target_pose",
              "source_keypoints", "target_keypoints", "pair_index")
#: The keys the jitted pair-model (DRN) steps and generation consume; keypoints and indices stay
#: on the host.
MODEL_KEYS = ("source_image", "target_image", "source_pose", "target_pose")


def model_inputs(batch: dict) -> dict:
  """``{k: batch[k] for k in MODEL_KEYS}``: the arrays a DRN step or generation consumes."""
  return {k: batch[k] for k in MODEL_KEYS}


def frame_padding(stored_size: tuple[int, int], pad_to_width: int) -> tuple[int, int]:
  """``(left, padded width)`` of the white padding :func:`frame_image` adds to a stored image.

  ``pad_to_width`` = 0 or an image at least that wide: ``(0, W0)`` (no padding). Otherwise
  ``left = (pad_to_width − W0) // 2`` columns on the left and the rest on the right (DIAF's
  256×256 framing of the 176-wide DeepFashion crops: 40 + 40).
  """
  width = int(stored_size[1])
  if pad_to_width and width < pad_to_width:
    return (int(pad_to_width) - width) // 2, int(pad_to_width)
  return 0, width


def frame_keypoints(keypoints: np.ndarray, stored_size: tuple[int, int], pad_to_width: int,
                    image_size: tuple[int, int]) -> np.ndarray:
  """Maps keypoints of a stored image into the model frame, as :func:`frame_image` maps the image.

  Args:
    keypoints: float ``[..., 18, 2]`` (y, x) stored-image pixels, −1 = missing (kept −1).
    stored_size: (H0, W0) of the stored image. pad_to_width: as :func:`frame_image`.
    image_size: (H, W) of the model frame.

  Returns:
    float32 keypoints of the same shape in ``image_size`` pixels.
  """
  keypoints = np.asarray(keypoints, np.float32).copy()
  left, padded_width = frame_padding(stored_size, pad_to_width)
  if left:
    keypoints[pose.present_mask(keypoints), 1] += left
  framed = (int(stored_size[0]), padded_width)
  if framed != tuple(image_size):
    keypoints = pose.resize_keypoints(keypoints, framed, image_size)
  return np.asarray(keypoints, np.float32)


def frame_image(image: Image.Image, keypoints: np.ndarray, pad_to_width: int,
                image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Pads an image to ``pad_to_width`` with white (keypoints shifted), then resizes to ``image_size``.

  The one framing every family uses (DRN/HPN: ``pad_to_width`` = 0, a bilinear resize to the
  training size; DIAF: the 256×256 white padding, :func:`frame_padding`); inference
  (:mod:`hpt_jax.inference`) frames a user's photo with it, so it sees what training saw.

  Args:
    image: RGB PIL image of the stored size (H0, W0).
    keypoints: float ``[18, 2]`` (y, x) pixels in the stored image, -1 = missing.
    pad_to_width: target frame width before resizing; 0 = no padding.
    image_size: (H, W) of the output.

  Returns:
    ``(image float32 [H, W, 3] in [-1, 1], keypoints float32 [18, 2] in the output frame)``.
  """
  stored = (image.height, image.width)
  left, padded_width = frame_padding(stored, pad_to_width)
  if left:
    canvas = Image.new("RGB", (padded_width, image.height), (255, 255, 255))
    canvas.paste(image, (left, 0))
    image = canvas
  if (image.height, image.width) != tuple(image_size):
    image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
  return patn_format.image_to_array(image), frame_keypoints(keypoints, stored, pad_to_width, image_size)


def load_side(example: patn_format.PairExample, side: str, pad_to_width: int,
              image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """One side (``'source'``/``'target'``) of a pair, read in its stored frame and framed by
  :func:`frame_image`; the DRN/HPN pipeline (no padding) and DIAF's (256×256 padding) both use it.

  Returns:
    ``(image float32 [H, W, 3] in [-1, 1], keypoints float32 [18, 2])`` at ``image_size``.

  Raises:
    patn_format.DataError: naming the image file and the pairs-file line of the pair.
  """
  try:
    image = example.open(side)
  except patn_format.DataError as e:
    raise patn_format.DataError(e.path, None, f"{e.message} (pair on line {example.row} of the pairs file)") from None
  return frame_image(image, getattr(example, f"{side}_keypoints"), pad_to_width, image_size)


def stored_size(data_config: Any) -> tuple[int, int] | None:
  """``data_config.stored_size`` as an (H, W) int tuple; None if the config has no such field
  (configs written before the field existed)."""
  size = getattr(data_config, "stored_size", None) if not hasattr(data_config, "get") else data_config.get("stored_size")
  return None if size is None else (int(size[0]), int(size[1]))


def load_examples(data_config: Any, logger: Callable[[str], Any] | None = None,
                  ) -> Sequence[patn_format.PairExample]:
  """Loads and checks the pairs named by a ``config.data`` block (hpt_jax/configs/deepfashion_drn.py).

  ``data_config.source`` picks where they come from: ``'folder'`` (the default, also for configs
  without the field) reads the PATN files as below; ``'tfds'`` returns the lazy
  :class:`hpt_jax.input_pipeline.tfds_source.TfdsPairs` of the prepared ArrayRecord data set
  ``data_config.tfds_name`` in ``.tfds_dir``, split ``.split`` (checked and written by
  ``launch/prepare_data.py``; no TensorFlow). Both give the same pairs in the same order for the
  same release files, which every pipeline indexes alike.

  Calls :func:`hpt_jax.input_pipeline.patn_format.load_pair_examples` with ``data_config.images``,
  ``.annotations``, ``.pairs``, ``.keypoint_x_offset`` and ``.skip_bad_examples``. Every image
  must have the stored size ``data_config.stored_size`` (H, W) (a config without the field: the
  first image's size, which all must share); it may differ from ``data_config.image_size``, the
  size :func:`create_pair_dataset` resizes to.

  Args:
    data_config: ``ml_collections.ConfigDict`` (or any object) with the fields above.
    logger: called with one line per message (e.g. ``logging.info``) to report skipped examples
      and the number loaded; None = silent.

  Returns:
    the valid pairs, in pairs-file order.

  Raises:
    patn_format.DataError: naming file and line, for bad data (unless ``skip_bad_examples``) or
      when no valid pair remains.
    hpt_jax.errors.ConfigError: an unknown ``source``; for ``'tfds'`` as
      :func:`hpt_jax.input_pipeline.tfds_source.load_examples`.
  """
  source = data_source(data_config)
  if source == "tfds":
    return tfds_source.load_examples(data_config, logger)
  if source != "folder":
    raise errors.ConfigError(f"data.source={source!r}: expected 'folder' (PATN files) or 'tfds' (a prepared "
                             "ArrayRecord data set, launch/prepare_data.py)")
  examples, report = patn_format.load_pair_examples(
      data_config.images, data_config.annotations, data_config.pairs,
      image_size=stored_size(data_config),
      keypoint_x_offset=data_config.keypoint_x_offset,
      skip_bad=data_config.skip_bad_examples)
  if logger is not None:
    if report.out_of_crop:
      logger(f"{data_config.annotations}: " + report.out_of_crop_summary(
          data_config.keypoint_x_offset, stored_size(data_config)[1]))
    if report.total or report.skipped_pairs:
      logger(f"{data_config.pairs}: {report.summary()}")
      for message in report.messages:
        logger(f"  {message}")
    logger(f"{data_config.pairs}: {len(examples)} valid pairs")
  return examples


def data_source(data_config: Any) -> str:
  """``data_config.source`` (``'folder'`` or ``'tfds'``); ``'folder'`` for configs without the field."""
  if hasattr(data_config, "get"):
    return data_config.get("source", "folder") or "folder"
  return getattr(data_config, "source", "folder") or "folder"


def example_sequence(examples: Sequence[patn_format.PairExample]) -> Sequence[patn_format.PairExample]:
  """What a loader keeps: a lazy TFDS sequence as it is (listing it would read every record),
  anything else as a list (the folder pipeline's behaviour)."""
  return examples if isinstance(examples, tfds_source.TfdsPairs) else list(examples)


class _PairLoader:
  """Turns an index into ``examples`` into one unbatched element (see create_pair_dataset)."""

  def __init__(self, examples: Sequence[patn_format.PairExample], image_size: tuple[int, int],
               sigma: float, pose_maps: bool = True, local_descriptors: int = 0):
    self._examples = example_sequence(examples)
    self._image_size = tuple(int(s) for s in image_size)
    self._sigma = float(sigma)
    self._pose_maps = pose_maps
    self._local_descriptors = local_descriptors

  def load(self, index: int, flip: bool) -> dict[str, np.ndarray]:
    example = self._examples[index]
    source_image, source_kp = load_side(example, "source", 0, self._image_size)
    target_image, target_kp = load_side(example, "target", 0, self._image_size)
    height, width = self._image_size
    if flip:
      source_image = np.ascontiguousarray(source_image[:, ::-1])
      target_image = np.ascontiguousarray(target_image[:, ::-1])
      source_kp = pose.flip_keypoints(source_kp, width)
      target_kp = pose.flip_keypoints(target_kp, width)
    element = {
        "source_image": source_image,
        "target_image": target_image,
        "source_keypoints": source_kp,
        "target_keypoints": target_kp,
        "pair_index": np.int32(index),
    }
    if self._pose_maps:
      heatmaps = pose.keypoints_to_heatmaps(np.stack([source_kp, target_kp]), height, width,
                                            self._sigma)
      element["source_pose"], element["target_pose"] = heatmaps[0], heatmaps[1]
    if self._local_descriptors:
      boxes, valid = pose.local_descriptor_boxes(target_kp, self._local_descriptors, self._image_size)
      element["target_boxes"], element["target_box_valid"] = boxes, valid
    return element


class _Load(grain.transforms.Map):
  """Loads a pair without flipping (eval, or train with flip=False)."""

  def __init__(self, loader):
    self._loader = loader

  def map(self, element: int) -> dict[str, np.ndarray]:
    return self._loader.load(int(element), flip=False)


class _LoadRandomFlip(grain.transforms.RandomMap):
  """Loads a pair and flips all four inputs together with probability 0.5."""

  def __init__(self, loader):
    self._loader = loader

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return self._loader.load(int(element), flip=bool(rng.random() < 0.5))


def create_pair_dataset(examples: Sequence[patn_format.PairExample], *,
                        image_size: tuple[int, int], sigma: float, batch_size: int, seed: int,
                        train: bool, flip: bool, shard_index: int = 0, shard_count: int = 1,
                        num_workers: int = 0, drop_remainder: bool = True,
                        read_threads: int = 4, pose_maps: bool = True,
                        local_descriptors: int = 0) -> grain.IterDataset:
  """Builds the grain pipeline of batched pose-transfer pairs.

  Each element of the returned dataset is a dict of numpy arrays (B = ``batch_size``, (H, W) =
  ``image_size``):

  * ``source_image``, ``target_image``: float32 ``[B, H, W, 3]`` in ``[-1, 1]`` (``x/127.5 - 1``).
  * ``source_pose``, ``target_pose``: float32 ``[B, H, W, 18]`` Gaussian heatmaps in ``[0, 1]``
    (:func:`hpt_jax.pose.keypoints_to_heatmaps`, ``sigma`` pixels).
  * ``source_keypoints``, ``target_keypoints``: float32 ``[B, 18, 2]`` (y, x) pixels of the
    ``image_size`` image, -1 = missing; flipped together with the images.
  * ``pair_index``: int32 ``[B]``, index into ``examples``.
  * with ``local_descriptors`` = N > 0 (HPN): ``target_boxes`` int32 ``[B, N, 4]`` (y0, x0, y1, x1)
    square boxes of side H // 8 around the target pose's local-descriptor points and
    ``target_box_valid`` bool ``[B, N]`` (:func:`hpt_jax.pose.local_descriptor_boxes`; computed
    after the flip, so they follow the flipped target).

  Stored images of another size are resized (PIL bilinear) and their keypoints mapped with
  :func:`hpt_jax.pose.resize_keypoints`. In train mode the order is shuffled (reshuffled every
  epoch) and repeated forever; with ``flip`` each pair is mirrored with probability 0.5, the same
  flip applied to both images and both keypoint sets with the left/right joint swap (RATE-Net
  ``data/keypoint_funit.py``). Eval mode reads its shard once in order.

  Args:
    examples: pairs from :func:`hpt_jax.input_pipeline.patn_format.load_pair_examples`.
    image_size: (H, W) of the output images in pixels.
    sigma: heatmap Gaussian std in pixels of the output image.
    batch_size: per-process batch size B (> 0).
    seed: pipeline seed (shuffle order and flips); combined with ``shard_index``.
    train: True = shuffle + repeat + optional flip; False = one ordered pass.
    flip: random horizontal flip (train mode only; ignored in eval mode).
    shard_index: this process's shard, in ``[0, shard_count)``; it reads
      ``examples[shard_index::shard_count]``.
    shard_count: number of shards (processes).
    num_workers: > 0: grain multiprocessing prefetch with that many worker processes; 0 keeps
      everything in this process (with ``read_threads`` threads).
    drop_remainder: drop the last incomplete batch (only matters in eval mode; use False there).
    read_threads: threads decoding elements in each process (grain ``ReadOptions.num_threads``).
    pose_maps: include ``source_pose``/``target_pose`` (False for models that render their own
      pose maps from the keypoints, e.g. HPN at the bottleneck; saves 2·H·W·18 floats per pair).
    local_descriptors: 0, or 18/31/44 — add the HPN local-descriptor boxes of the target pose.

  Returns:
    a ``grain.IterDataset``; ``iter()`` of it gives a ``grain.DatasetIterator`` with
    ``get_state()``/``set_state()`` (see the module docstring for Orbax checkpointing).

  Raises:
    ValueError: bad batch_size/shard arguments, an empty shard, or ``local_descriptors`` not in
      (0, 18, 31, 44).
    patn_format.DataError: (while iterating) an image that fails to decode, naming the file.
  """
  if local_descriptors not in (0, 18, 31, 44):
    raise ValueError(f"local_descriptors must be 0, 18, 31 or 44, got {local_descriptors!r}")
  loader = _PairLoader(examples, image_size, sigma, pose_maps, local_descriptors)
  return batched_dataset(loader, len(examples), batch_size=batch_size, seed=seed, train=train,
                         flip=flip, shard_index=shard_index, shard_count=shard_count,
                         num_workers=num_workers, drop_remainder=drop_remainder,
                         read_threads=read_threads)


def batched_dataset(loader, num_examples: int, *, batch_size: int, seed: int, train: bool,
                    flip: bool, shard_index: int = 0, shard_count: int = 1, num_workers: int = 0,
                    drop_remainder: bool = True, read_threads: int = 4) -> grain.IterDataset:
  """The grain assembly every pair pipeline shares (DRN/HPN here, DIAF in ``diaf_pipeline``).

  This process's shard ``range(num_examples)[shard_index::shard_count]`` → (train: seeded
  shuffle, reshuffled every epoch, repeated forever) → ``loader.load(index, flip)`` with
  ``flip`` drawn with p = 0.5 per element when ``train and flip`` → batches of ``batch_size`` →
  optional multiprocessing prefetch. The iterator is checkpointable (``get_state``/``set_state``).

  Args:
    loader: object with ``load(index: int, flip: bool) -> dict of numpy arrays``.
    num_examples: how many indices the loader accepts.
    batch_size, seed, train, flip, shard_index, shard_count, num_workers, drop_remainder,
      read_threads: as in :func:`create_pair_dataset`.

  Raises:
    ValueError: bad batch_size/shard/num_workers arguments, or an empty shard.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  if num_workers < 0:
    raise ValueError(f"num_workers must be >= 0, got {num_workers}")
  indices = np.arange(num_examples, dtype=np.int64)[shard_index::shard_count]
  if len(indices) == 0:
    raise ValueError(f"shard {shard_index} of {shard_count} of {num_examples} examples is empty")
  ds = grain.MapDataset.source(indices)
  if train:
    shard_seed = int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])
    ds = ds.seed(shard_seed).shuffle().repeat()
  if train and flip:
    ds = ds.random_map(_LoadRandomFlip(loader))
  else:
    ds = ds.map(_Load(loader))
  # Elements are large (~4 MB at 256×176), so keep grain's read-ahead buffer small.
  read_options = grain.ReadOptions(num_threads=read_threads,
                                   prefetch_buffer_size=max(2 * batch_size, read_threads))
  ids = ds.to_iter_dataset(read_options).batch(batch_size, drop_remainder=drop_remainder)
  if num_workers > 0:
    # grain reads absl flags when starting workers; outside an absl app (pytest, notebooks) they
    # are unparsed, so take the defaults (as grain's own tests do). An absl app has parsed them.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # Workers ignore SIGTERM/SIGINT (this process stops them with SIGKILL), so a preemption signal
    # to the whole job does not kill them before the checkpoint save (hpt_jax.preemption).
    from hpt_jax import preemption
    preemption.stop_grain_workers_at_exit()
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                          worker_init_fn=preemption.grain_worker_init)
  return ids


def pipeline_throughput(dataset_iter: Iterator[dict[str, Any]], num_batches: int,
                        warmup_batches: int = 1) -> float:
  """Measures how fast an iterator of batches delivers pairs.

  Args:
    dataset_iter: iterator over batches from :func:`create_pair_dataset` (consumed).
    num_batches: batches timed (> 0), after ``warmup_batches`` untimed ones.
    warmup_batches: batches drawn first and not timed (start-up, worker spawn).

  Returns:
    pairs per second (float), counting ``len(batch['pair_index'])`` per batch, wall clock.

  Raises:
    ValueError: num_batches <= 0. StopIteration: the iterator ran out.
  """
  if num_batches <= 0:
    raise ValueError(f"num_batches must be positive, got {num_batches}")
  for _ in range(warmup_batches):
    next(dataset_iter)
  pairs = 0
  start = time.perf_counter()
  for _ in range(num_batches):
    pairs += len(next(dataset_iter)["pair_index"])
  return pairs / (time.perf_counter() - start)

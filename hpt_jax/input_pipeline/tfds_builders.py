"""TFDS builders of the pose-transfer pair data sets, written as ArrayRecord (no TensorFlow).

Two builders read PATN's public release files from a *manual download* folder and write one
ArrayRecord file set per split (``download_and_prepare(file_format='array_record')``,
what ``launch/prepare_data.py`` runs):

* ``deepfashion_pose_transfer`` — DeepFashion In-shop Clothes Retrieval (Liu et al., "DeepFashion:
  Powering Robust Clothes Recognition and Retrieval with Rich Annotations", CVPR 2016) with PATN's
  pairs and keypoints (Zhu et al., "Progressive Pose Attention Transfer for Person Image
  Generation", CVPR 2019; tengteng95/Pose-Transfer @ 281ee2d README.md,
  ``tool/generate_fashion_datasets.py``). Configs:

  - ``crop_256x176`` (default): PATN's 256×176 crops (``train/``, ``test/``), keypoints as in the
    ``fasion-resize-annotation-*.csv`` files.
  - ``inshop_256x256``: the uncropped 256×256 In-shop images (the release's ``img/`` tree) that
    DIAF works on (Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer",
    CVPR 2019); keypoints shifted by +40 columns (PATN's crop is columns 40–215).

* ``market1501_pose_transfer`` — Market-1501 (Zheng et al., "Scalable Person Re-identification: A
  Benchmark", ICCV 2015) with PATN's pairs and keypoints, 128×64.

Each example (one pair, in the order of the release's pairs CSV; pairs that fail the checks of
:func:`hpt_jax.input_pipeline.patn_format.load_pair_examples` are left out and logged):

* ``source_image``, ``target_image``: bytes, the released image files unchanged (JPEG); both the
  folder and the TFDS source decode them with PIL, so their examples are identical.
* ``source_keypoints``, ``target_keypoints``: float32 ``[18, 2]`` (y, x) pixels of the stored
  image, OpenPose-18 order, ``-1`` = missing.
* ``source_name``, ``target_name``: the image names of the CSVs (text).
* ``person_id``: the outfit (DeepFashion: the name up to ``_<n><view>.jpg``) or the identity
  (Market-1501: the 4-digit prefix) — text.
* ``pair_index``: int64, 0-based index of the pair among the split's examples (the folder
  pipeline's ``pair_index`` of the same pair); ``pairs_line``: int64, its 1-based line in the
  pairs CSV (header = line 1).

Splits: ``train`` and ``test`` as released, and ``test_small`` (the first
:attr:`PoseTransferConfig.small_pairs` test pairs) for smoke tests. Examples are written in
generation order (``disable_shuffling``), so index ``i`` of a split is pair ``i``.

Building and reading need ``tensorflow-datasets`` and ``array_record`` (the ``tfds`` extra) but
not TensorFlow. **The data are for non-commercial research only** (the DeepFashion and
Market-1501 terms); this module only reads a copy the user obtained from the data set owners.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hpt_jax import errors
from hpt_jax.input_pipeline import patn_format

#: The builders' version (the ArrayRecord files of one version are read by this code only).
DATASET_VERSION = "1.0.0"

SPLITS = ("train", "test", "test_small")


@dataclasses.dataclass
class PoseTransferConfig(tfds.core.BuilderConfig):
  """A builder config: where the release keeps each split and the stored frame.

  Attributes:
    stored_size: (H, W) pixels of every stored image (checked while building).
    keypoint_x_offset: added to x of present joints of the annotation CSVs (+40 for the uncropped
      In-shop images whose annotations are in PATN's 256×176 crop frame).
    image_dirs: split → release folder(s) of its images, relative to the manual folder; the first
      that exists is used. ``'img'`` = the nested In-shop tree (:func:`inshop_image_path`).
    annotations, pairs: split ('train'/'test') → the release's CSV file names.
    small_pairs: pairs in the ``test_small`` split (the first ones of ``test``).
  """
  stored_size: tuple[int, int] = (256, 176)
  keypoint_x_offset: int = 0
  image_dirs: dict = dataclasses.field(default_factory=dict)
  annotations: dict = dataclasses.field(default_factory=dict)
  pairs: dict = dataclasses.field(default_factory=dict)
  small_pairs: int = 100


_FASHION_CSVS = dict(
    annotations={"train": "fasion-resize-annotation-train.csv", "test": "fasion-resize-annotation-test.csv"},
    pairs={"train": "fasion-resize-pairs-train.csv", "test": "fasion-resize-pairs-test.csv"})

DEEPFASHION_CONFIGS = (
    PoseTransferConfig(
        name="crop_256x176", version=DATASET_VERSION, stored_size=(256, 176),
        description="PATN's 256x176 crops (train/, test/) with the fasion-resize-* CSVs.",
        image_dirs={"train": ("train",), "test": ("test",)}, **_FASHION_CSVS),
    PoseTransferConfig(
        name="inshop_256x256", version=DATASET_VERSION, stored_size=(256, 256), keypoint_x_offset=40,
        description="The uncropped 256x256 In-shop images (img/ tree) for DIAF's framing; keypoints +40 columns.",
        image_dirs={"train": ("img",), "test": ("img",)}, **_FASHION_CSVS),
)

MARKET_CONFIGS = (
    PoseTransferConfig(
        name="crop_128x64", version=DATASET_VERSION, stored_size=(128, 64),
        description="Market-1501 bounding boxes (128x64) with PATN's market-* CSVs.",
        image_dirs={"train": ("train", "bounding_box_train"), "test": ("test", "bounding_box_test")},
        annotations={"train": "market-annotation-train.csv", "test": "market-annotation-test.csv"},
        pairs={"train": "market-pairs-train.csv", "test": "market-pairs-test.csv"}),
)

_DEEPFASHION_INSTRUCTIONS = """\
DeepFashion In-shop Clothes Retrieval (non-commercial research use only; ask the owners for the
password: http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html) with PATN's pairs
and keypoints (tengteng95/Pose-Transfer README, "DeepFashion"; Google Drive folder
1YMsYXc41dR3k8YroXeWGh9zweNUQmZBw). Put into the manual folder (PATN's `fashion_data/`):

  fasion-resize-annotation-train.csv   PATN's keypoints of the training images (256x176 frame)
  fasion-resize-annotation-test.csv    ... of the test images
  fasion-resize-pairs-train.csv        101,966 training pairs (header from,to)
  fasion-resize-pairs-test.csv         8,570 test pairs
  train/   crop_256x176: the 256x176 training crops, flat names such as
           fashionWOMENDressesid0000370504_4full.jpg (PATN's tool/generate_fashion_datasets.py
           writes them from img/ with fashion_data/train.lst)
  test/    crop_256x176: the 256x176 test crops (fashion_data/test.lst)
  img/     inshop_256x256: the release's Img/img.zip extracted (img/WOMEN/Dresses/id_00003705/04_4_full.jpg)

The CSV names keep PATN's spelling "fasion".
"""

_MARKET_INSTRUCTIONS = """\
Market-1501 (non-commercial research use only: http://www.liangzheng.com.cn/Project/project_reid.html)
with PATN's pairs and keypoints (tengteng95/Pose-Transfer README, "Market1501"; Google Drive folder
1YMsYXc41dR3k8YroXeWGh9zweNUQmZBw). Put into the manual folder (PATN's `market_data/`):

  market-annotation-train.csv   PATN's keypoints of the training images (128x64)
  market-annotation-test.csv    ... of the test images
  market-pairs-train.csv        263,632 training pairs (header from,to)
  market-pairs-test.csv         12,000 test pairs
  train/   the release's bounding_box_train/ (renamed as PATN does, or kept as bounding_box_train/)
  test/    the release's bounding_box_test/ (or bounding_box_test/)
"""

_INSHOP_NAME = re.compile(r"^fashion(WOMEN|MEN)(.+)id(\d{8})(\d{2})_(\d+)([A-Za-z]+)\.jpg$")


def inshop_image_path(img_dir: str | os.PathLike, name: str) -> str:
  """The In-shop ``img/`` file of a PATN image name (the inverse of PATN's renaming).

  ``fashionWOMENDressesid0000370504_4full.jpg`` → ``img/WOMEN/Dresses/id_00003705/04_4_full.jpg``
  (tengteng95/Pose-Transfer @ 281ee2d ``tool/generate_fashion_datasets.py`` joins the path parts
  and drops the ``_`` of ``id_…`` and of the view). A name of another form maps to
  ``img_dir/name`` (then reported missing by the checks).
  """
  m = _INSHOP_NAME.match(name)
  if m is None:
    return os.path.join(img_dir, name)
  gender, category, item, number, view, kind = m.groups()
  return os.path.join(img_dir, gender, category, f"id_{item}", f"{number}_{view}_{kind}.jpg")


def person_id(name: str, dataset: str) -> str:
  """Outfit id (DeepFashion: the name up to ``_<n><view>.jpg``) or identity (Market-1501: the
  prefix before the first ``_``) of an image name."""
  if dataset == "market1501":
    return name.split("_", 1)[0]
  return re.sub(r"_\d+[A-Za-z]*\.\w+$", "", name)


@dataclasses.dataclass
class ReleaseFiles:
  """Where a split's release files are: ``images`` folder, ``annotations`` and ``pairs`` CSVs
  (``epath.Path`` s), and ``missing``: the expected paths that do not exist."""
  images: epath.Path
  annotations: epath.Path
  pairs: epath.Path
  missing: list[str]


def release_files(config: PoseTransferConfig, manual_dir: str | os.PathLike, split: str) -> ReleaseFiles:
  """The release files of ``split`` ('train' or 'test') in ``manual_dir`` (a local or mounted folder)."""
  root = epath.Path(manual_dir)
  dirs = [root / d for d in config.image_dirs[split]]
  images = next((d for d in dirs if d.is_dir()), dirs[0])
  files = ReleaseFiles(images, root / config.annotations[split], root / config.pairs[split], [])
  if not images.is_dir():
    files.missing.append(f"{' or '.join(os.fspath(d) + '/' for d in dirs)} (the {split} images)")
  for path in (files.annotations, files.pairs):
    if not path.is_file():
      files.missing.append(os.fspath(path))
  return files


def check_release(config: PoseTransferConfig, manual_dir: str | os.PathLike, dataset: str) -> None:
  """Raises :class:`hpt_jax.errors.MissingFileError` (one line) naming every missing release file
  with the path where it is expected; the builder's ``MANUAL_DOWNLOAD_INSTRUCTIONS`` give the layout."""
  missing = [m for split in ("train", "test") for m in release_files(config, manual_dir, split).missing]
  missing = list(dict.fromkeys(missing))
  if missing:
    raise errors.MissingFileError(
        f"missing release file{'s' if len(missing) > 1 else ''} in the manual folder {os.fspath(manual_dir)}: "
        f"{'; '.join(missing)} (the layout of PATN's {dataset} release: README 'Full datasets', "
        "or MANUAL_DOWNLOAD_INSTRUCTIONS in hpt_jax/input_pipeline/tfds_builders.py)")


def validate_split(config: PoseTransferConfig, manual_dir: str | os.PathLike, split: str, progress=None,
                   ) -> tuple[list[patn_format.PairExample], patn_format.BadExampleReport]:
  """Checks every row of a split ('train' or 'test') as the folder pipeline does.

  ``progress``: as in :func:`~hpt_jax.input_pipeline.patn_format.load_pair_examples` (a tqdm
  wrapper shows a progress bar with ETA over the pair rows).

  Runs :func:`hpt_jax.input_pipeline.patn_format.load_pair_examples` with ``skip_bad=True`` on
  the release files (``config.stored_size``, ``config.keypoint_x_offset``).

  Returns:
    ``(valid pairs in pairs-file order, report)``: the report counts each fault type and keeps the
    first messages (file and line).

  Raises:
    hpt_jax.errors.MissingFileError: a release file is missing (named, with where it is expected).
    patn_format.DataError: a bad CSV header, or no valid pair at all.
  """
  files = release_files(config, manual_dir, split)
  if files.missing:
    raise errors.MissingFileError(f"missing release file(s): {'; '.join(files.missing)}")
  image_path = None
  if config.image_dirs[split] == ("img",):
    image_path = lambda name: inshop_image_path(files.images, name)  # noqa: E731
  return patn_format.load_pair_examples(
      os.fspath(files.images), os.fspath(files.annotations), os.fspath(files.pairs),
      image_size=tuple(config.stored_size), keypoint_x_offset=config.keypoint_x_offset,
      skip_bad=True, image_path=image_path, progress=progress)


class _PoseTransferBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder; subclasses set ``DATASET``, ``BUILDER_CONFIGS`` and the instructions.

  Args (besides TFDS's):
    validated: optional ``{'train': examples, 'test': examples}`` from :func:`validate_split`
      (``launch/prepare_data.py`` validates first and passes them, so rows are not checked twice).
  """

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "ArrayRecord pairs of PATN's release files (hpt-jax)."}
  DATASET = ""

  def __init__(self, *, validated: dict | None = None, **kwargs):
    self._validated = dict(validated or {})
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    image = lambda side: tfds.features.Tensor(  # noqa: E731
        shape=(), dtype=np.object_, doc=f"the {side} image file's bytes as released (JPEG)")
    keypoints = lambda side: tfds.features.Tensor(  # noqa: E731
        shape=(18, 2), dtype=np.float32, doc=f"{side} (y, x) pixels of the stored image, -1 = missing")
    features = tfds.features.FeaturesDict({
        "source_image": image("source"), "target_image": image("target"),
        "source_keypoints": keypoints("source"), "target_keypoints": keypoints("target"),
        "source_name": tfds.features.Text(doc="source image name in the CSVs"),
        "target_name": tfds.features.Text(doc="target image name in the CSVs"),
        "person_id": tfds.features.Text(doc="outfit (DeepFashion) or identity (Market-1501) id"),
        "pair_index": tfds.features.Scalar(dtype=np.int64, doc="0-based index of the pair in its split"),
        "pairs_line": tfds.features.Scalar(dtype=np.int64, doc="1-based line in the pairs CSV"),
    })
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0], features=features,
        disable_shuffling=True, homepage="https://github.com/tengteng95/Pose-Transfer",
        license="Non-commercial research use only (the data set owners' terms).")

  def _split_generators(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    check_release(self.builder_config, manual_dir, self.DATASET)
    examples = {}
    for split in ("train", "test"):
      if split in self._validated:
        examples[split] = self._validated[split]
        continue
      examples[split], report = validate_split(self.builder_config, manual_dir, split)
      if report.total or report.skipped_pairs:
        logging.warning("%s %s: %s", self.name, split, report.summary())
        for message in report.messages:
          logging.warning("  %s", message)
    small = examples["test"][:self.builder_config.small_pairs]
    return {"train": self._generate_examples(examples["train"]),
            "test": self._generate_examples(examples["test"]),
            "test_small": self._generate_examples(small)}

  def _generate_examples(self, examples: Sequence[patn_format.PairExample]) -> Iterator[tuple[int, dict]]:
    for index, e in enumerate(examples):
      source_name, target_name = os.path.basename(e.source_path), os.path.basename(e.target_path)
      yield index, {
          "source_image": epath.Path(e.source_path).read_bytes(),
          "target_image": epath.Path(e.target_path).read_bytes(),
          "source_keypoints": np.asarray(e.source_keypoints, np.float32),
          "target_keypoints": np.asarray(e.target_keypoints, np.float32),
          "source_name": _name(e.source_path, source_name),
          "target_name": _name(e.target_path, target_name),
          "person_id": person_id(_name(e.source_path, source_name), self.DATASET),
          "pair_index": index,
          "pairs_line": e.row,
      }


def _name(path: str, basename: str) -> str:
  """The CSV name of an image: its basename, or for an In-shop tree path the PATN name."""
  parts = path.replace(os.sep, "/").split("/")
  if len(parts) >= 5 and parts[-4] in ("WOMEN", "MEN") and parts[-2].startswith("id_"):
    number, view, kind = basename[:-len(".jpg")].split("_", 2)
    return f"fashion{parts[-4]}{parts[-3]}{parts[-2].replace('_', '')}{number}_{view}{kind}.jpg"
  return basename


class DeepfashionPoseTransfer(_PoseTransferBuilder):
  """DeepFashion In-shop pose-transfer pairs (PATN's release); see the module docstring."""
  BUILDER_CONFIGS = list(DEEPFASHION_CONFIGS)
  DEFAULT_CONFIG_NAME = "crop_256x176"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _DEEPFASHION_INSTRUCTIONS
  DATASET = "deepfashion"


class Market1501PoseTransfer(_PoseTransferBuilder):
  """Market-1501 pose-transfer pairs (PATN's release); see the module docstring."""
  BUILDER_CONFIGS = list(MARKET_CONFIGS)
  DEFAULT_CONFIG_NAME = "crop_128x64"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MARKET_INSTRUCTIONS
  DATASET = "market1501"


#: ``--dataset`` of ``launch/prepare_data.py`` → builder class.
BUILDERS = {"deepfashion": DeepfashionPoseTransfer, "market1501": Market1501PoseTransfer}

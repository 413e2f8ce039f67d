"""TFDS builders → ArrayRecord → grain: the bundled samples laid out as PATN's manual downloads.

Every example read back from ArrayRecord equals the folder pipeline's, in the same order for the
same seed (shards and iterator checkpoints included) — with CPU training deterministic
(``tests/test_train.py``), identical batches train to identical parameters (the ``:cpu`` DRN
preset was checked by hand: bit-identical after 5 cycles); ``prepare_data`` names missing release files and counts faulty rows; the reading
path imports no TensorFlow. The samples are research-only data (hpt_jax/data/README.md).
"""

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hpt_jax import errors
from hpt_jax.commands import prepare_data
from hpt_jax.configs import deepfashion_diaf, deepfashion_drn
from hpt_jax.data import DEEPFASHION_SAMPLE, MARKET1501_SAMPLE
from hpt_jax.input_pipeline import diaf_pipeline, patn_format, pipeline, tfds_source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PATN's release names (tengteng95/Pose-Transfer @ 281ee2d README.md) → the sample's files.
_LAYOUT = {
    "deepfashion": (DEEPFASHION_SAMPLE, "fasion-resize-{kind}-{split}.csv", (256, 176)),
    "market1501": (MARKET1501_SAMPLE, "market-{kind}-{split}.csv", (128, 64)),
}
_NAMES = {"deepfashion": "deepfashion_pose_transfer/crop_256x176", "market1501": "market1501_pose_transfer/crop_128x64"}


def _manual_dir(root, dataset):
  """The sample as a manual download: train/ and test/ images, the four CSVs under PATN's names."""
  sample, pattern, _ = _LAYOUT[dataset]
  os.makedirs(root)
  for split, pairs in (("train", "pairs_train.csv"), ("test", "pairs_eval.csv")):
    os.symlink(os.path.join(sample, "img"), os.path.join(root, split))
    shutil.copy(os.path.join(sample, "annotation.csv"), os.path.join(root, pattern.format(kind="annotation", split=split)))
    shutil.copy(os.path.join(sample, pairs), os.path.join(root, pattern.format(kind="pairs", split=split)))
  return str(root)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """Both samples built once: {dataset: (manual_dir, data_dir, prepare result)}."""
  root = tmp_path_factory.mktemp("tfds")
  out = {}
  for dataset in _LAYOUT:
    manual = _manual_dir(root / f"manual_{dataset}", dataset)
    data_dir = str(root / "data")
    out[dataset] = (manual, data_dir, prepare_data.prepare(dataset, manual, data_dir, echo=lambda *_: None))
  return out


def _configs(dataset, data_dir, module=deepfashion_drn, preset="tiny"):
  """(folder config, tfds config) of the same sample."""
  sample, _, size = _LAYOUT[dataset]
  folder = module.get_config(preset)
  for d, pairs in ((folder.data, "pairs_train.csv"), (folder.eval_data, "pairs_eval.csv")):
    d.images, d.annotations, d.pairs = (os.path.join(sample, "img"), os.path.join(sample, "annotation.csv"),
                                        os.path.join(sample, pairs))
    d.stored_size = size
  tfds = module.get_config(preset)
  tfds.data, tfds.eval_data = folder.data.copy_and_resolve_references(), folder.eval_data.copy_and_resolve_references()
  for d in (tfds.data, tfds.eval_data):
    d.source, d.tfds_name, d.tfds_dir = "tfds", _NAMES[dataset], data_dir
  return folder, tfds


def _batches(examples, n, **kw):
  args = dict(image_size=(64, 44), sigma=1.5, batch_size=4, seed=7, train=True, flip=True) | kw
  it = iter(pipeline.create_pair_dataset(examples, **args))
  return [next(it) for _ in range(n)] if n else list(it)


def _assert_same(a, b):
  assert len(a) == len(b) and len(a) > 0
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("dataset", ["deepfashion", "market1501"])
def test_builder_writes_array_record_of_the_released_files(prepared, dataset):
  manual, data_dir, result = prepared[dataset]
  sample = _LAYOUT[dataset][0]
  n_train = len(patn_format.read_pairs(os.path.join(sample, "pairs_train.csv")))
  n_test = len(patn_format.read_pairs(os.path.join(sample, "pairs_eval.csv")))
  assert result["splits"] == {"train": n_train, "test": n_test, "test_small": min(100, n_test)}
  files = sorted(os.listdir(result["path"]))
  assert sum(f.endswith(".array_record-00000-of-00001") for f in files) == 3, files
  pairs = tfds_source.TfdsPairs(_NAMES[dataset], data_dir, "test")
  rows = patn_format.read_pairs(os.path.join(sample, "pairs_eval.csv"))
  annotations = patn_format.read_annotations(os.path.join(sample, "annotation.csv"))
  for i in (0, len(pairs) - 1):
    e, (src, tgt, line) = pairs[i], rows[i]
    assert (os.path.basename(e.source_path), os.path.basename(e.target_path), e.row, e.pair_index) == (src, tgt, line, i)
    assert e.source_bytes == open(os.path.join(sample, "img", src), "rb").read()   # released bytes, unchanged
    np.testing.assert_array_equal(e.target_keypoints, annotations[tgt])
    assert e.person_id == (src.split("_")[0] if dataset == "market1501" else src.rsplit("_", 1)[0])
    assert tgt.startswith(e.person_id)
  assert prepare_data.overrides(_NAMES[dataset], data_dir, "crop_256x176")[:4] == [
      "--config.data.source=tfds", f"--config.data.tfds_name={_NAMES[dataset]}",
      f"--config.data.tfds_dir={data_dir}", "--config.data.split=train"]
  # A rerun reuses the prepared files.
  again = prepare_data.prepare(dataset, manual, data_dir, echo=lambda *_: None)
  assert again["reused"] and again["splits"] == result["splits"]


@pytest.mark.parametrize("dataset", ["deepfashion", "market1501"])
def test_tfds_examples_equal_folder_examples_in_the_same_order(prepared, dataset):
  _, data_dir, _ = prepared[dataset]
  folder, tfds = _configs(dataset, data_dir)
  for block in ("data", "eval_data"):
    a, b = pipeline.load_examples(folder[block]), pipeline.load_examples(tfds[block])
    assert isinstance(b, tfds_source.TfdsPairs) and len(a) == len(b)
    _assert_same(_batches(a, 0, train=False, flip=False, drop_remainder=False),
                 _batches(b, 0, train=False, flip=False, drop_remainder=False))
  a, b = pipeline.load_examples(folder.data), pipeline.load_examples(tfds.data)
  _assert_same(_batches(a, 6), _batches(b, 6))                                   # shuffle + flips, seed 7
  _assert_same(_batches(a, 2, shard_index=1, shard_count=2), _batches(b, 2, shard_index=1, shard_count=2))
  hpn = dict(pose_maps=False, local_descriptors=18)                             # HPN's pipeline options
  _assert_same(_batches(a, 2, **hpn), _batches(b, 2, **hpn))
  assert not np.array_equal(_batches(b, 1, seed=8)[0]["pair_index"], _batches(b, 1)[0]["pair_index"])
  # Checkpointed iterator: a TFDS iterator restored from a folder iterator's state continues alike.
  it_a = iter(pipeline.create_pair_dataset(a, image_size=(64, 44), sigma=1.5, batch_size=4, seed=7, train=True, flip=True))
  for _ in range(3):
    next(it_a)
  it_b = iter(pipeline.create_pair_dataset(b, image_size=(64, 44), sigma=1.5, batch_size=4, seed=7, train=True, flip=True))
  it_b.set_state(it_a.get_state())
  _assert_same([next(it_a) for _ in range(2)], [next(it_b) for _ in range(2)])
  # Picklable for grain's worker processes; slices stay lazy views.
  c = pickle.loads(pickle.dumps(b))
  np.testing.assert_array_equal(c[5].source_keypoints, a[5].source_keypoints)
  assert isinstance(b[:3], tfds_source.TfdsPairs) and [e.row for e in b[:3]] == [e.row for e in a[:3]]


def test_diaf_pipeline_and_the_inshop_256x256_builder(tmp_path):
  """The In-shop tree (the sample crops padded to 256×256 with white) → ``inshop_256x256``: bytes as
  released, keypoints +40; DIAF's pipeline from it equals the folder pipeline on the same files."""
  manual = tmp_path / "manual"
  flat = tmp_path / "flat"
  flat.mkdir()
  pairs = patn_format.read_pairs(os.path.join(DEEPFASHION_SAMPLE, "pairs_eval.csv"))
  from hpt_jax.input_pipeline import tfds_builders
  for name in {n for s, t, _ in pairs for n in (s, t)}:
    image = Image.new("RGB", (256, 256), (255, 255, 255))
    image.paste(Image.open(os.path.join(DEEPFASHION_SAMPLE, "img", name)), (40, 0))
    path = tfds_builders.inshop_image_path(str(manual / "img"), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, quality=90)
    shutil.copy(path, flat / name)
  assert "img/WOMEN/" in path.replace(os.sep, "/") or "img/MEN/" in path.replace(os.sep, "/")
  for split in ("train", "test"):
    shutil.copy(os.path.join(DEEPFASHION_SAMPLE, "annotation.csv"), manual / f"fasion-resize-annotation-{split}.csv")
    shutil.copy(os.path.join(DEEPFASHION_SAMPLE, "pairs_eval.csv"), manual / f"fasion-resize-pairs-{split}.csv")
  result = prepare_data.prepare("deepfashion", str(manual), str(tmp_path / "data"), "inshop_256x256", echo=lambda *_: None)
  assert result["splits"]["test"] == len(pairs) and "--config.data.stored_size=256,256" in result["overrides"]
  folder = deepfashion_diaf.get_config("tiny")
  d = folder.eval_data
  d.images, d.annotations, d.pairs = str(flat), os.path.join(DEEPFASHION_SAMPLE, "annotation.csv"), os.path.join(DEEPFASHION_SAMPLE, "pairs_eval.csv")
  d.stored_size, d.keypoint_x_offset = (256, 256), 40
  tfds = deepfashion_diaf.get_config("tiny")
  tfds.eval_data = d.copy_and_resolve_references()
  tfds.eval_data.update(dict(source="tfds", tfds_name="deepfashion_pose_transfer/inshop_256x256",
                             tfds_dir=str(tmp_path / "data"), split="test", keypoint_x_offset=0))
  a, b = pipeline.load_examples(folder.eval_data), pipeline.load_examples(tfds.eval_data)
  assert b[0].source_bytes == open(flat / os.path.basename(a[0].source_path), "rb").read()
  np.testing.assert_array_equal(b[0].source_keypoints, a[0].source_keypoints)      # +40 columns, both
  runs = [list(diaf_pipeline.create_diaf_dataset(ex, cfg, cfg.eval_data, batch_size=4, seed=0, train=False,
                                                 drop_remainder=False))[:3] for ex, cfg in ((a, folder), (b, tfds))]
  _assert_same(*runs)


def test_prepare_data_counts_faults_and_names_missing_files(tmp_path, capsys):
  manual = _manual_dir(tmp_path / "manual", "market1501")
  # A missing image, a short annotation row (17 y values) and a short pairs row (one name).
  images = tmp_path / "images"
  shutil.copytree(os.path.join(MARKET1501_SAMPLE, "img"), images)
  os.remove(os.path.join(manual, "train"))
  os.symlink(images, os.path.join(manual, "train"))
  pairs = patn_format.read_pairs(os.path.join(MARKET1501_SAMPLE, "pairs_train.csv"))
  missing_name = pairs[3][1]
  os.remove(images / missing_name)
  ann = os.path.join(manual, "market-annotation-train.csv")
  lines = open(ann).read().splitlines()
  short_line = next(i for i, l in enumerate(lines) if l.startswith(pairs[10][0]))
  name, ys, xs = lines[short_line].split(":")
  lines[short_line] = f"{name}: {ys.rsplit(',', 1)[0]}]:{xs}"
  open(ann, "w").write("\n".join(lines) + "\n")
  pairs_csv = os.path.join(manual, "market-pairs-train.csv")
  plines = open(pairs_csv).read().splitlines()
  plines[20] = plines[20].split(",")[0]
  open(pairs_csv, "w").write("\n".join(plines) + "\n")
  with pytest.raises(errors.UserError, match="--skip_bad") as e:
    prepare_data.prepare("market1501", manual, str(tmp_path / "data"))
  assert "bad_annotation_row=1" in str(e.value) and "bad_pair_row=1" in str(e.value) and "missing_image=1" in str(e.value)
  out = capsys.readouterr().out
  assert f"market-annotation-train.csv, line {short_line + 1}: bad annotation row: expected 18 y and 18 x values" in out
  assert "market-pairs-train.csv, line 21: expected two image names" in out
  assert f"{missing_name}: image file not found" in out
  assert not os.path.exists(tmp_path / "data" / "market1501_pose_transfer")            # nothing written
  uses = sum(1 for s, t, line in pairs if missing_name in (s, t) or pairs[10][0] in (s, t) or line == 21)
  result = prepare_data.prepare("market1501", manual, str(tmp_path / "data"), skip_bad=True)
  assert result["splits"]["train"] == len(pairs) - uses
  # A missing release file: named, with where it is expected; the CLI prints one line and exits 1.
  os.remove(os.path.join(manual, "market-pairs-test.csv"))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "launch", "prepare_data.py"), "--dataset=market1501",
                         f"--manual_dir={manual}", f"--data_dir={tmp_path / 'data2'}"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert f"error: missing release file in the manual folder {manual}: {os.path.join(manual, 'market-pairs-test.csv')}" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_prepare_data_interrupted_leaves_nothing_and_reruns(tmp_path, monkeypatch):
  """An interrupt while writing (here an exception after 5 pairs; Ctrl-C unwinds the same way)
  leaves no data set and no incomplete folder; the rerun writes it whole."""
  from hpt_jax.input_pipeline import tfds_builders
  manual = _manual_dir(tmp_path / "manual", "market1501")
  original = tfds_builders._PoseTransferBuilder._generate_examples

  def interrupted(self, examples):
    for i, item in enumerate(original(self, examples)):
      if i == 5:
        raise RuntimeError("interrupted")
      yield item
  monkeypatch.setattr(tfds_builders._PoseTransferBuilder, "_generate_examples", interrupted)
  with pytest.raises(RuntimeError, match="interrupted"):
    prepare_data.prepare("market1501", manual, str(tmp_path / "data"), echo=lambda *_: None, show_progress=False)
  config_dir = tmp_path / "data" / "market1501_pose_transfer" / "crop_128x64"
  assert not config_dir.exists() or os.listdir(config_dir) == []
  monkeypatch.setattr(tfds_builders._PoseTransferBuilder, "_generate_examples", original)
  result = prepare_data.prepare("market1501", manual, str(tmp_path / "data"), echo=lambda *_: None, show_progress=False)
  assert not result["reused"] and result["splits"]["train"] == len(
      patn_format.read_pairs(os.path.join(MARKET1501_SAMPLE, "pairs_train.csv")))
  assert os.listdir(config_dir) == ["1.0.0"]


_NO_TF = r"""
import importlib.abc, sys
class NoTF(importlib.abc.MetaPathFinder):       # TensorFlow absent, as on the accelerator machines
  def __init__(self, inner): self.inner = inner
  def find_spec(self, name, path=None, target=None):
    return None if name.split(".")[0] == "tensorflow" else self.inner.find_spec(name, path, target)
  def invalidate_caches(self): getattr(self.inner, "invalidate_caches", lambda: None)()
sys.meta_path[:] = [NoTF(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
from hpt_jax.configs import deepfashion_drn
from hpt_jax.input_pipeline import pipeline
c = deepfashion_drn.get_config("tiny")
c.data.update(dict(source="tfds", tfds_dir=sys.argv[1]))
ex = pipeline.load_examples(c.data)
batch = next(iter(pipeline.create_pair_dataset(ex, image_size=(32, 24), sigma=1.5, batch_size=2, seed=0, train=True, flip=True)))
assert batch["source_image"].shape == (2, 32, 24, 3)
bad = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
print(bad); sys.exit(1 if bad else 0)
"""


def test_reading_path_needs_no_tensorflow(prepared):
  _, data_dir, _ = prepared["deepfashion"]
  proc = subprocess.run([sys.executable, "-c", _NO_TF, data_dir], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_tfds_source_errors(prepared, tmp_path):
  _, data_dir, _ = prepared["deepfashion"]
  _, tfds = _configs("deepfashion", data_dir)
  tfds.data.tfds_dir = str(tmp_path)
  with pytest.raises(errors.MissingFileError, match="not prepared.*launch/prepare_data.py --dataset=deepfashion"):
    pipeline.load_examples(tfds.data)
  tfds.data.tfds_dir, tfds.data.stored_size = data_dir, (128, 64)
  with pytest.raises(errors.ConfigError, match="stored_size=256,176"):
    pipeline.load_examples(tfds.data)
  tfds.data.stored_size, tfds.data.split = (256, 176), "validation"
  with pytest.raises(errors.ConfigError, match="data.split='validation'"):
    pipeline.load_examples(tfds.data)
  tfds.data.source = "parquet"
  with pytest.raises(errors.ConfigError, match="data.source='parquet'"):
    pipeline.load_examples(tfds.data)

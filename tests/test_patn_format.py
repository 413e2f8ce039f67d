"""Tests for hpt_jax.input_pipeline.patn_format on the vendored DeepFashion sample and on bad input."""

import json
import os
import shutil

from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
import pytest
from PIL import Image

from hpt_jax import pose
from hpt_jax.input_pipeline import patn_format

SAMPLE = DEEPFASHION_SAMPLE
IMAGES = os.path.join(SAMPLE, "img")
ANNOTATIONS = os.path.join(SAMPLE, "annotation.csv")
SIZE = (256, 176)


def test_read_annotations_sample():
  annotations = patn_format.read_annotations(ANNOTATIONS, image_size=SIZE)
  assert len(annotations) == 314
  assert sorted(annotations) == sorted(os.listdir(IMAGES))
  stacked = np.stack(list(annotations.values()))
  assert stacked.shape == (314, 18, 2) and stacked.dtype == np.float32
  present = pose.present_mask(stacked)
  assert (~present).sum() == 1264  # hpt_jax/data/README.md: 1,264 of 5,652 joints are missing
  assert (stacked[~present] == -1).all()
  for keypoints in annotations.values():
    pose.validate_keypoints(keypoints, *SIZE)
  first = annotations["fashionWOMENBlouses_Shirtsid0000531105_2side.jpg"]
  np.testing.assert_array_equal(first[0], (48, 78))  # (y, x) of the nose
  np.testing.assert_array_equal(first[9], (-1, -1))


def test_keypoint_x_offset_only_on_present_joints():
  plain = patn_format.read_annotations(ANNOTATIONS)
  shifted = patn_format.read_annotations(ANNOTATIONS, keypoint_x_offset=40)
  for name, keypoints in plain.items():
    present = pose.present_mask(keypoints)
    np.testing.assert_array_equal(shifted[name][present, 1], keypoints[present, 1] + 40)
    np.testing.assert_array_equal(shifted[name][present, 0], keypoints[present, 0])
    assert (shifted[name][~present] == -1).all()


def test_read_pairs_sample():
  train = patn_format.read_pairs(os.path.join(SAMPLE, "pairs_train.csv"))
  evaluation = patn_format.read_pairs(os.path.join(SAMPLE, "pairs_eval.csv"))
  assert len(train) == 322 and len(evaluation) == 44
  assert train[0] == ("fashionWOMENTees_Tanksid0000250305_2side.jpg",
                      "fashionWOMENTees_Tanksid0000250305_1front.jpg", 2)


def test_load_pair_examples_sample():
  examples, report = patn_format.load_pair_examples(
      IMAGES, ANNOTATIONS, os.path.join(SAMPLE, "pairs_train.csv"), SIZE)
  assert len(examples) == 322 and report.total == 0 and report.skipped_pairs == 0
  assert examples[0].row == 2 and os.path.isfile(examples[0].source_path)
  assert examples[0].source_keypoints.shape == (18, 2)


def test_decode_image():
  image = patn_format.decode_image(os.path.join(IMAGES, sorted(os.listdir(IMAGES))[0]))
  assert image.shape == (256, 176, 3) and image.dtype == np.float32
  assert -1.0 <= image.min() < image.max() <= 1.0
  assert patn_format.decode_image(os.path.join(IMAGES, sorted(os.listdir(IMAGES))[0]),
                                  size=(128, 88)).shape == (128, 88, 3)


# ----------------------------------------------------------------------------- bad input

_NAMES = ("a.jpg", "b.jpg", "c.jpg", "d.jpg")


def _make_dataset(tmp_path):
  """Four real images (copied under new names) and their real annotation rows; pairs a->b, c->d."""
  with open(ANNOTATIONS) as f:
    rows = f.read().splitlines()[1:5]
  images = tmp_path / "img"
  images.mkdir()
  lines = ["name:keypoints_y:keypoints_x"]
  for new, row in zip(_NAMES, rows):
    old, rest = row.split(":", 1)
    shutil.copy(os.path.join(IMAGES, old), images / new)
    lines.append(f"{new}:{rest}")
  annotations = tmp_path / "annotation.csv"
  annotations.write_text("\n".join(lines) + "\n")
  pairs = tmp_path / "pairs.csv"
  pairs.write_text("from,to\na.jpg,b.jpg\nc.jpg,d.jpg\n")
  return images, annotations, pairs


def _replace_row(path, line_no, transform):
  lines = path.read_text().splitlines()
  lines[line_no - 1] = transform(lines[line_no - 1])
  path.write_text("\n".join(lines) + "\n")


def _edit_keypoints(annotations, line_no, edit):
  """Rewrites annotation row ``line_no`` as ``name: edit(ys): xs`` or per ``edit(ys, xs)``."""
  def transform(row):
    name, ys, xs = row.split(":")
    ys, xs = edit(json.loads(ys), json.loads(xs))
    return f"{name}: {json.dumps(ys)}: {json.dumps(xs)}"
  _replace_row(annotations, line_no, transform)


def _load(images, annotations, pairs, skip_bad):
  return patn_format.load_pair_examples(images, annotations, pairs, SIZE, 0, skip_bad)


def _check_bad(paths, reason, file_at_fault, line, skipped_pairs=1):
  with pytest.raises(patn_format.DataError) as info:
    _load(*paths, skip_bad=False)
  message = str(info.value)
  assert os.fspath(file_at_fault) in message, message
  assert f"line {line}" in message, message
  examples, report = _load(*paths, skip_bad=True)
  assert len(examples) == 2 - skipped_pairs
  assert report.counts == {reason: 1} and report.skipped_pairs == skipped_pairs
  assert os.fspath(file_at_fault) in report.messages[0]
  return examples


def test_good_small_dataset(tmp_path):
  examples, report = _load(*_make_dataset(tmp_path), skip_bad=False)
  assert [e.row for e in examples] == [2, 3] and report.total == 0


def test_missing_image(tmp_path):
  images, annotations, pairs = paths = _make_dataset(tmp_path)
  os.remove(images / "d.jpg")
  examples = _check_bad(paths, patn_format.MISSING_IMAGE, images / "d.jpg", line=3)
  assert examples[0].row == 2


def test_unreadable_image(tmp_path):
  images, _, _ = paths = _make_dataset(tmp_path)
  (images / "a.jpg").write_bytes(b"this is not a jpeg" * 10)
  examples = _check_bad(paths, patn_format.UNREADABLE_IMAGE, images / "a.jpg", line=2)
  assert examples[0].row == 3
  with pytest.raises(patn_format.DataError, match="a.jpg"):
    patn_format.decode_image(images / "a.jpg")


def test_wrong_size_image(tmp_path):
  images, _, _ = paths = _make_dataset(tmp_path)
  Image.new("RGB", (100, 100)).save(images / "b.jpg")
  _check_bad(paths, patn_format.UNREADABLE_IMAGE, images / "b.jpg", line=2)


def test_pair_names_unannotated_image(tmp_path):
  _, _, pairs = paths = _make_dataset(tmp_path)
  _replace_row(pairs, 3, lambda _: "c.jpg,zzz.jpg")
  with pytest.raises(patn_format.DataError, match="zzz.jpg"):
    _load(*paths, skip_bad=False)
  _check_bad(paths, patn_format.UNANNOTATED_IMAGE, pairs, line=3)


def test_annotation_row_with_17_joints(tmp_path):
  _, annotations, _ = paths = _make_dataset(tmp_path)
  _edit_keypoints(annotations, 3, lambda ys, xs: (ys[:17], xs))  # b.jpg
  assert "17" in str(pytest.raises(patn_format.DataError, _load, *paths, skip_bad=False).value)
  _check_bad(paths, patn_format.BAD_ANNOTATION_ROW, annotations, line=3)


def test_unparsable_annotation_row(tmp_path):
  _, annotations, _ = paths = _make_dataset(tmp_path)
  _replace_row(annotations, 4, lambda row: row.replace("[", "(", 1))  # c.jpg
  _check_bad(paths, patn_format.BAD_ANNOTATION_ROW, annotations, line=4)


def test_keypoint_outside_image(tmp_path):
  _, annotations, _ = paths = _make_dataset(tmp_path)
  _edit_keypoints(annotations, 5, lambda ys, xs: (ys, [500] + xs[1:]))  # d.jpg: nose x
  _check_bad(paths, patn_format.KEYPOINT_OUTSIDE_IMAGE, annotations, line=5)


def test_no_valid_pairs(tmp_path):
  images, annotations, pairs = _make_dataset(tmp_path)
  os.remove(images / "a.jpg")
  os.remove(images / "c.jpg")
  with pytest.raises(patn_format.DataError, match="no valid pairs"):
    _load(images, annotations, pairs, skip_bad=True)


def test_bad_headers(tmp_path):
  _, annotations, pairs = paths = _make_dataset(tmp_path)
  _replace_row(pairs, 1, lambda _: "source,target")
  with pytest.raises(patn_format.DataError, match="line 1"):
    _load(*paths, skip_bad=True)
  _replace_row(annotations, 1, lambda _: "name,keypoints_y,keypoints_x")
  with pytest.raises(patn_format.DataError, match="line 1"):
    patn_format.read_annotations(annotations)


def test_duplicate_annotation_row_keeps_first(tmp_path):
  _, annotations, _ = paths = _make_dataset(tmp_path)
  with open(annotations, "a") as f:
    f.write("a.jpg: [1]: [1]\n")  # line 6: duplicate (and malformed) row for a.jpg
  with pytest.raises(patn_format.DataError, match="line 6"):
    _load(*paths, skip_bad=False)
  examples, report = _load(*paths, skip_bad=True)
  assert len(examples) == 2 and report.counts == {patn_format.BAD_ANNOTATION_ROW: 1}


def test_inferred_stored_size_rejects_odd_image(tmp_path):
  images, annotations, pairs = _make_dataset(tmp_path)
  Image.new("RGB", (176, 200)).save(images / "d.jpg")
  examples, report = patn_format.load_pair_examples(images, annotations, pairs, skip_bad=True)
  assert len(examples) == 1 and report.counts == {patn_format.UNREADABLE_IMAGE: 1}
  assert "expected 256x176" in report.messages[0]


# ------------------------------------------------------- the official test set's out-of-crop joints
OUT_OF_CROP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "deepfashion_out_of_crop")


def _stand_in_images(folder, names, size):
  """Plain stand-in images named as the annotation rows (the tests need files of the right size)."""
  os.makedirs(folder, exist_ok=True)
  for name in names:
    Image.new("RGB", (size[1], size[0]), (200, 180, 160)).save(os.path.join(folder, name))


def test_official_out_of_crop_joints_load_as_missing(tmp_path):
  """The 19 official test rows with a joint outside the 176-wide crop (offset −40): every one of
  the 34 official pairs that use them loads, the joints become missing, and the report counts
  them. 11 joints lie off the left edge and 8 off the right (checked against the 256x256 frame)."""
  annotations = os.path.join(OUT_OF_CROP, "annotation.csv")
  raw = patn_format.read_annotations(annotations)                       # 256x256 coordinates
  images = str(tmp_path / "img")
  _stand_in_images(images, raw, (256, 256))                              # uncropped In-shop frame
  examples, report = patn_format.load_pair_examples(images, annotations, os.path.join(OUT_OF_CROP, "pairs.csv"),
                                                    SIZE, keypoint_x_offset=-40)
  assert len(examples) == 34 and report.total == 0 and report.skipped_pairs == 0
  assert len(report.out_of_crop) == 19 and report.out_of_crop_pairs == 34
  left = right = 0
  for name, (line, joints) in report.out_of_crop.items():
    assert len(joints) == 1
    x = raw[name][joints[0], 1] - 40
    left += int(x < 0)
    right += int(x >= 176)
  assert (left, right) == (11, 8)                                     # right-edge joints are caught too
  summary = report.out_of_crop_summary(-40, 176)
  assert summary.startswith("19 joints in 19 annotation rows lie outside the 176-wide crop") and "34 pairs" in summary
  for e in examples:
    for side in ("source", "target"):
      name = os.path.basename(getattr(e, f"{side}_path"))
      kp = getattr(e, f"{side}_keypoints")
      pose.validate_keypoints(kp, *SIZE)                                 # every kept joint is inside
      present = pose.present_mask(raw[name])
      if name in report.out_of_crop:
        j = report.out_of_crop[name][1][0]
        assert present[j] and (kp[j] == -1).all()
        present[j] = False
      np.testing.assert_array_equal(kp[present], raw[name][present] - np.float32([0, 40]))
      assert getattr(e, f"{side}_crop_x") == 40 and e.open(side).size == (176, 256)


def test_uncropped_images_are_centre_cropped_not_squashed(tmp_path):
  """A 256x256 image with offset −40 is read as columns 40–215 (PATN's crop); other sizes are errors."""
  images, annotations, pairs = _make_dataset(tmp_path)
  wide = np.zeros((256, 256, 3), np.uint8)
  wide[:, :, 0] = np.arange(256, dtype=np.uint8)[None, :]                # red = column index
  Image.fromarray(wide).save(images / "a.jpg", format="PNG")            # lossless, under the pair's name
  # The sample's annotations are already cropped: give them back the 40-column margin for the test.
  _edit_keypoints(annotations, 2, lambda ys, xs: (ys, [x + 40 if x != -1 else -1 for x in xs]))
  for line in (3, 4, 5):
    _edit_keypoints(annotations, line, lambda ys, xs: (ys, [x + 40 if x != -1 else -1 for x in xs]))
  for name in ("b.jpg", "c.jpg", "d.jpg"):
    small = np.asarray(Image.open(images / name))
    padded = np.full((256, 256, 3), 255, np.uint8)
    padded[:, 40:216] = small
    Image.fromarray(padded).save(images / name, format="PNG")
  examples, report = patn_format.load_pair_examples(images, annotations, pairs, SIZE, keypoint_x_offset=-40)
  assert len(examples) == 2 and not report.out_of_crop
  a = np.asarray(examples[0].open("source"))
  assert a.shape == (256, 176, 3)
  np.testing.assert_array_equal(a[0, :, 0], np.arange(40, 216))        # columns 40..215, not a resize
  # The pipeline reads the same crop.
  from hpt_jax.input_pipeline import pipeline
  ds = pipeline.create_pair_dataset(examples, image_size=SIZE, sigma=3.0, batch_size=2, seed=0, train=False,
                                    flip=False)
  batch = next(iter(ds))
  np.testing.assert_array_equal(np.round((batch["source_image"][0, 0, :, 0] + 1) * 127.5), np.arange(40, 216))
  # Any other mismatch between image and annotation frame is an error naming the file.
  Image.new("RGB", (240, 256)).save(images / "c.jpg", format="PNG")
  with pytest.raises(patn_format.DataError, match=r"c.jpg: image is 256x240 \(HxW\), expected 256x176 .*or 256x256"):
    patn_format.load_pair_examples(images, annotations, pairs, SIZE, keypoint_x_offset=-40)


def test_joints_outside_the_uncropped_frame_are_errors(tmp_path):
  images, annotations, pairs = paths = _make_dataset(tmp_path)
  # Offset −40: the annotation frame is 256 wide; x = 300 is outside it, however it is cropped.
  _edit_keypoints(annotations, 5, lambda ys, xs: (ys, [300] + xs[1:]))  # d.jpg: nose x
  with pytest.raises(patn_format.DataError, match=r"annotation.csv, line 5: .*outside the 256x256 image"):
    patn_format.load_pair_examples(*paths, SIZE, keypoint_x_offset=-40)
  # A positive offset shifts joints right with no wider frame: past the right edge is an error.
  _edit_keypoints(annotations, 5, lambda ys, xs: (ys, [170] + xs[1:]))
  with pytest.raises(patn_format.DataError, match="keypoint_x_offset=20"):
    patn_format.load_pair_examples(*paths, SIZE, keypoint_x_offset=20)

"""Transfer on anyone's photo (hpt_jax.transfer, hpt_jax.keypoint_files, launch/transfer.py).

Tiny models with random weights built from each family's inference variables (nothing trained:
these tests are about reading, framing, retargeting, writing and errors, not image quality).
Photo tests use the bundled DeepFashion sample and photos made from it here; those that need the
MediaPipe models skip when ``python launch/fetch_models.py`` has not been run.
"""

import json
import os
import subprocess
import sys

import imageio.v2 as imageio
from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
import pytest
from PIL import Image

from hpt_jax.configs import deepfashion_diaf, deepfashion_drn, deepfashion_hpn
from hpt_jax import errors, inference, keypoint_files, pose, transfer
from hpt_jax.metrics import pose_estimator
from hpt_jax.input_pipeline import patn_format
from tests._helpers import random_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = DEEPFASHION_SAMPLE
MODELS_PRESENT = all(os.path.isfile(os.path.join(pose_estimator.default_model_dir(), m))
                     for m in (pose_estimator.LANDMARK_MODEL, pose_estimator.DETECTOR_MODEL))
needs_models = pytest.mark.skipif(not MODELS_PRESENT, reason=f"MediaPipe models absent: run "
                                  f"`{pose_estimator.FETCH_COMMAND}`")


@pytest.fixture(scope="module")
def annotations():
  return patn_format.read_annotations(os.path.join(SAMPLE, "annotation.csv"))


def _names(annotations, n, word="front"):
  """``n`` sample images of one view with both shoulders and hips annotated."""
  out = [k for k, kp in sorted(annotations.items()) if word in k and pose.present_mask(kp)[[2, 5, 8, 11]].all()]
  return out[:n]


def _model(family: str, seed: int = 0):
  config = {"drn": deepfashion_drn, "hpn": deepfashion_hpn, "diaf": deepfashion_diaf}[family].get_config("tiny")
  if family == "hpn":
    config.model.num_levels = 2
  cls = getattr(inference, {"drn": "DRNModel", "hpn": "HPNModel", "diaf": "DIAFModel"}[family])
  return cls(config, random_like(cls.abstract_variables(config), seed), batch_size=2)


@pytest.fixture(scope="module")
def drn_model():
  return _model("drn")


@pytest.fixture(scope="module")
def estimator():
  if not MODELS_PRESENT:
    pytest.skip(f"MediaPipe models absent: run `{pose_estimator.FETCH_COMMAND}`")
  return pose_estimator.MediaPipePoseEstimator(person_detector=True)


def _patn_file(tmp_path, name, kp):
  path = tmp_path / f"{os.path.splitext(name)[0]}.csv"
  ys, xs = [int(v) for v in kp[:, 0]], [int(v) for v in kp[:, 1]]
  path.write_text(f"name:keypoints_y:keypoints_x\n{name}: {json.dumps(ys)}: {json.dumps(xs)}\n")
  return str(path)


def _openpose_json(path, people):
  """OpenPose ``--write_json`` content for ``people``: list of [J, 3] (x, y, c) arrays."""
  record = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": np.asarray(p, float).ravel().tolist()}
                                       for p in people]}
  path.write_text(json.dumps(record))
  return str(path)


# ------------------------------------------------------------------------- keypoint files
def test_keypoint_formats(tmp_path, annotations):
  name = sorted(annotations)[0]
  gt = annotations[name]
  # PATN CSV row, with and without the header.
  with_header = keypoint_files.read_keypoint_file(_patn_file(tmp_path, name, gt))
  np.testing.assert_array_equal(with_header.keypoints, gt)
  assert with_header.format == "patn" and with_header.image_size is None
  bare = tmp_path / "bare.csv"
  bare.write_text((tmp_path / f"{os.path.splitext(name)[0]}.csv").read_text().splitlines()[1] + "\n")
  np.testing.assert_array_equal(keypoint_files.read_keypoint_file(bare).keypoints, gt)
  # hpt-jax JSON: list and names forms round-trip, with the image size.
  for names in (False, True):
    path = keypoint_files.write_keypoints_json(tmp_path / f"kp_{names}.json", gt, (256, 176), names=names)
    back = keypoint_files.read_keypoint_file(path)
    np.testing.assert_allclose(back.keypoints, gt, atol=1e-3)
    assert back.image_size == (256, 176) and back.format == "hpt_jax"
  assert set(json.load(open(tmp_path / "kp_True.json"))["keypoints"]) == {
      pose.JOINT_NAMES[k] for k in np.flatnonzero(pose.present_mask(gt))}
  # OpenPose COCO-18: (x, y, c); a low-confidence joint is missing; of two people the larger is taken.
  xyc = np.concatenate([gt[:, ::-1], np.full((18, 1), 0.9)], 1)
  xyc[~pose.present_mask(gt)] = 0
  xyc[4, 2] = 0.05
  small = xyc.copy()
  small[:, :2] = small[:, :2] * 0.2
  op = keypoint_files.read_keypoint_file(_openpose_json(tmp_path / "coco.json", [small, xyc]))
  expected = gt.copy()
  expected[4] = -1
  np.testing.assert_allclose(op.keypoints, expected, atol=1e-4)
  assert "2 people, took the largest (people[1])" in op.note
  assert np.all(keypoint_files.read_keypoint_file(tmp_path / "coco.json", confidence_threshold=0.01,
                                                  person=1).keypoints[4] == gt[4])
  # BODY_25: joint j at (x, y) = (10 + j, 100 + j); mid-hip (8) and the feet (19-24) are dropped.
  body = np.stack([10 + np.arange(25), 100 + np.arange(25), np.full(25, 0.8)], 1)
  b25 = keypoint_files.read_keypoint_file(_openpose_json(tmp_path / "body25.json", [body])).keypoints
  mapped = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
  np.testing.assert_array_equal(b25, np.stack([100 + np.array(mapped), 10 + np.array(mapped)], 1))
  assert b25[8].tolist() == [109, 19]          # r_hip = BODY_25 RHip (9), not MidHip (8)


def test_keypoint_file_errors_name_the_file_and_row(tmp_path):
  cases = {
      "op.json": (json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 20}]}),
                  "people[0].pose_keypoints_2d: 20 values: expected 54"),
      "row.csv": ("name:keypoints_y:keypoints_x\na.jpg: " + json.dumps([1] * 17) + ": " + json.dumps([1] * 18) + "\n",
                  "line 2: bad PATN annotation row: expected 18 y and 18 x values, got 17 and 18"),
      "two.csv": ("a.jpg: " + json.dumps([1] * 18) + ": " + json.dumps([1] * 18) + "\nb.jpg: " + json.dumps([1] * 18)
                  + ": " + json.dumps([1] * 18) + "\n", "2 annotation rows"),
      "kp.json": (json.dumps({"format": "hpt_jax-keypoints", "version": 1, "keypoints": [[1, 2]] * 17}),
                  "keypoints: 17 joints: expected 18"),
      "names.json": (json.dumps({"format": "hpt_jax-keypoints", "version": 1, "keypoints": {"hand": [1, 2]}}),
                     "unknown joint names ['hand']"),
      "other.json": (json.dumps({"points": []}), "unknown keypoint JSON"),
      "broken.json": ("{", "line 1: not valid JSON"),
  }
  for fname, (text, expected) in cases.items():
    (tmp_path / fname).write_text(text)
    with pytest.raises(keypoint_files.KeypointFileError) as e:
      keypoint_files.read_keypoint_file(tmp_path / fname)
    assert str(e.value).startswith(str(tmp_path / fname)) and expected in str(e.value), str(e.value)
    assert isinstance(e.value, errors.UserError) and isinstance(e.value, ValueError)
  # A readable file with too few joints for a person.
  few = np.full((18, 2), -1.0)
  few[[0, 14, 15, 17]] = [(20, 80), (15, 75), (15, 85), (18, 95)]
  path = keypoint_files.write_keypoints_json(tmp_path / "face.json", few, (256, 176))
  with pytest.raises(transfer.NoPersonError) as e:
    transfer.read_targets(path, estimator=None)
  assert str(e.value) == (f"{path}: only 4 of 18 joints found (nose, r_eye, l_eye, l_ear); at least 6 are needed "
                          "(the person's head, shoulders and hips)")


# ------------------------------------------------------------------------- photos
def test_load_photo_exif_modes_and_bad_files(tmp_path, annotations):
  original = np.asarray(Image.open(os.path.join(SAMPLE, "img", sorted(annotations)[0])).convert("RGB"))
  # Stored rotated by 90° with EXIF orientation 6 (display = rotate 90° clockwise): read upright.
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(original).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rot.jpg", exif=exif, quality=95)
  assert np.asarray(Image.open(tmp_path / "rot.jpg")).shape == (176, 256, 3)
  upright = transfer.load_photo(tmp_path / "rot.jpg")
  assert upright.shape == original.shape and np.abs(upright.astype(int) - original).mean() < 3
  # Grayscale, RGBA (transparent = white), palette with a transparent index, 16-bit.
  Image.fromarray(np.full((4, 6), 77, np.uint8)).save(tmp_path / "gray.png")
  np.testing.assert_array_equal(transfer.load_photo(tmp_path / "gray.png"), np.full((4, 6, 3), 77))
  rgba = np.zeros((4, 6, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[:2, :, 3] = 255                       # top half opaque red-ish, bottom half transparent
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  got = transfer.load_photo(tmp_path / "rgba.png")
  assert got[0, 0].tolist() == [200, 0, 0] and got[3, 0].tolist() == [255, 255, 255]
  pal = Image.new("P", (6, 4), 1)
  pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  pal.info["transparency"] = 0
  pal.paste(0, (0, 0, 3, 4))
  pal.save(tmp_path / "pal.png", transparency=0)
  got = transfer.load_photo(tmp_path / "pal.png")
  assert got[0, 0].tolist() == [255, 255, 255] and got[0, 5].tolist() == [10, 20, 30]
  Image.fromarray(np.full((4, 6), 65535 // 2, np.uint16)).save(tmp_path / "deep.png")
  assert transfer.load_photo(tmp_path / "deep.png")[0, 0].tolist() == [127, 127, 127]
  # Unreadable and missing files name the file.
  (tmp_path / "bad.jpg").write_bytes(b"not an image")
  for path, what in ((tmp_path / "bad.jpg", "not a readable image"), (tmp_path / "none.jpg", "photo not found")):
    with pytest.raises(transfer.PhotoError, match=what) as e:
      transfer.load_photo(path)
    assert str(path) in str(e.value) and isinstance(e.value, errors.UserError)


# ------------------------------------------------------------------------- framing, retargeting
def _person(y0=49.5, x0=199.5):
  """Joints of a standing person spanning rows y0..y0+200 and columns x0..x0+60."""
  kp = np.full((18, 2), -1, np.float32)
  for k, (dy, dx) in {0: (0, 30), 1: (30, 30), 2: (30, 0), 5: (30, 60), 8: (130, 10), 11: (130, 50),
                      10: (200, 15), 13: (200, 45)}.items():
    kp[k] = (y0 + dy, x0 + dx)
  return kp


def test_person_crop_and_round_trip_on_a_landscape_photo():
  kp = _person()
  crop = transfer.person_crop(kp, (256, 176))
  # Joints span continuous rows 50..250 and columns 200..260: 0.12 · 200 = 24 above and below,
  # widened to 176/256 about x = 230.
  assert crop.top == pytest.approx(26) and crop.height == pytest.approx(248)
  assert crop.width == pytest.approx(248 * 176 / 256) and crop.left == pytest.approx(230 - 248 * 176 / 512)
  np.testing.assert_allclose(crop.to_photo(crop.to_stored(kp)), kp, atol=1e-4)
  assert np.all(crop.to_stored(kp)[~pose.present_mask(kp)] == -1)
  # A smooth 300x500 photo: crop, then paste the crop back: the box matches the photo, the rest is kept.
  yy, xx = np.mgrid[:300, :500].astype(np.float32)
  photo = np.stack([127 + 100 * np.sin(xx / 40), 127 + 100 * np.cos(yy / 35), (xx + yy) / 4], -1).astype(np.uint8)
  stored = crop.crop(photo)
  assert stored.shape == (256, 176, 3)
  back = crop.paste(stored, photo)
  inside = (slice(27, 273), slice(146, 314))
  assert np.abs(back[inside].astype(int) - photo[inside]).mean() < 2.0
  np.testing.assert_array_equal(back[:, :140], photo[:, :140])
  np.testing.assert_array_equal(back[:, 320:], photo[:, 320:])
  # A person at the left edge: the box reaches past the photo, which is padded with white.
  edge = transfer.person_crop(_person(x0=5.5), (256, 176))
  assert edge.left < 0
  stored = edge.crop(photo)
  cols = int(-edge.left * edge.scale) - 1
  assert np.all(stored[:, :cols] == 255) and not np.all(stored[:, cols + 3:] == 255)


def test_retarget_keeps_the_source_torso_and_the_motion():
  source = np.full((18, 2), -1, np.float32)
  source[[2, 5, 8, 11]] = [(50, 60), (50, 100), (150, 60), (150, 100)]      # torso 100 px, centre (100, 80)
  target = np.full((18, 2), -1, np.float32)
  target[[0, 2, 5, 8, 11]] = [(10, 40), (20, 30), (20, 50), (70, 30), (70, 50)]   # torso 50 px, centre (45, 40)
  out, how = transfer.retarget(target, source, (256, 176))
  assert "torso length" in how and "scale 2.00" in how
  np.testing.assert_allclose(out[0], (30, 80))                          # (10 − 45)·2 + 100, (40 − 40)·2 + 80
  np.testing.assert_allclose(out[[2, 5, 8, 11]], source[[2, 5, 8, 11]])
  assert transfer.torso(out)[0] == pytest.approx(transfer.torso(source)[0])
  # A sequence gets one similarity: the median centre (50, 42.5) maps to the source's, motion doubles.
  moved = np.where(pose.present_mask(target)[:, None], target + np.float32([10, 5]), -1)
  seq, _ = transfer.retarget(np.stack([target, moved]), source, (256, 176))
  np.testing.assert_allclose(seq[:, 0], [(20, 75), (40, 85)])
  # Without hips anywhere, the shoulder width is matched; without shoulders it cannot retarget.
  no_hips = np.where(np.isin(np.arange(18), [8, 11])[:, None], -1, target)
  out, how = transfer.retarget(no_hips, np.where(np.isin(np.arange(18), [8, 11])[:, None], -1, source))
  assert "shoulder width" in how and np.linalg.norm(out[2] - out[5]) == pytest.approx(40)
  with pytest.raises(transfer.RetargetError, match="--no_retarget"):
    transfer.retarget(np.where(np.isin(np.arange(18), [1, 2, 5])[:, None], -1, target), source)


# ------------------------------------------------------------------------- transfer
def test_keypoint_file_target_equals_generate_and_writes_a_png(tmp_path, drn_model, annotations):
  src_name, tgt_name = _names(annotations, 2)
  src_kp = _patn_file(tmp_path, src_name, annotations[src_name])
  tgt_kp = _patn_file(tmp_path, tgt_name, annotations[tgt_name])
  source = os.path.join(SAMPLE, "img", src_name)
  result = transfer.transfer(drn_model, source, tgt_kp, source_keypoints=src_kp, retarget_pose=False, panel=True)
  np.testing.assert_array_equal(result.target_keypoints[0], annotations[tgt_name])   # PATN rows: the stored frame
  direct = drn_model.generate(result.source_image, result.source_keypoints, result.target_keypoints[0])
  np.testing.assert_array_equal(result.images[0], direct["image"])
  assert result.images[0].shape == (256, 176, 3) and result.panels[0].shape == (256, 528, 3)
  np.testing.assert_array_equal(result.panels[0][:, 352:], result.images[0])
  paths = transfer.write_outputs(result, str(tmp_path / "out" / "result"))
  assert paths == [str(tmp_path / "out" / "result.png"), str(tmp_path / "out" / "result_panel.png")]
  np.testing.assert_array_equal(np.asarray(Image.open(paths[0])), result.images[0])
  # Retargeted (the default): the target's torso length becomes the source's.
  again = transfer.transfer(drn_model, source, tgt_kp, source_keypoints=src_kp, paste_back=True)
  assert transfer.torso(again.target_keypoints[0])[0] == pytest.approx(transfer.torso(again.source_keypoints)[0],
                                                                     rel=1e-4)
  assert again.images[0].shape == (256, 176, 3)             # pasted back into the 256x176 photo


def test_folder_of_three_keypoint_files_makes_a_gif_and_an_mp4(tmp_path, drn_model, annotations):
  src_name, *frames = _names(annotations, 4)
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, name in enumerate(frames):          # frames in name order; other files are ignored
    kp = annotations[name][:, ::-1]
    _openpose_json(folder / f"frame_{i:02d}.json", [np.concatenate([kp, np.where(kp[:, :1] >= 0, 0.9, 0)], 1)])
  (folder / "notes.txt").write_text("not a frame")
  result = transfer.transfer(drn_model, os.path.join(SAMPLE, "img", src_name), str(folder),
                             source_keypoints=_patn_file(tmp_path, src_name, annotations[src_name]), fps=5, panel=True)
  assert result.sequence and len(result.images) == 3
  assert result.names == [str(folder / f"frame_{i:02d}.json") for i in range(3)]
  paths = transfer.write_outputs(result, str(tmp_path / "video.mp4"))
  assert [os.path.basename(p) for p in paths] == ["video.gif", "video.mp4", "video_panel.gif", "video_panel.mp4"]
  gif = imageio.mimread(paths[0])
  assert len(gif) == 3 and gif[0].shape[:2] == (256, 176)
  with transfer.no_fork_warning():
    reader = imageio.get_reader(paths[1], format="FFMPEG")
    assert reader.get_meta_data()["fps"] == 5 and sum(1 for _ in reader) == 3
    reader.close()


@pytest.mark.parametrize("family", ["hpn", "diaf"])
def test_every_family(tmp_path, family, annotations):
  src_name, tgt_name = _names(annotations, 2)
  model = _model(family)
  result = transfer.transfer(model, os.path.join(SAMPLE, "img", src_name),
                             _patn_file(tmp_path, tgt_name, annotations[tgt_name]),
                             source_keypoints=_patn_file(tmp_path, src_name, annotations[src_name]))
  assert result.images[0].shape == (256, 176, 3) and result.images[0].dtype == np.uint8


@needs_models
def test_photo_target_and_estimated_source(tmp_path, drn_model, estimator, annotations):
  src_name, tgt_name = _names(annotations, 2)
  result = transfer.transfer(drn_model, os.path.join(SAMPLE, "img", src_name), os.path.join(SAMPLE, "img", tgt_name),
                             estimator=estimator, panel=True)
  # The estimated source joints agree with the annotation, both mapped into the crop.
  gt = result.crop.to_stored(annotations[src_name])
  both = pose.present_mask(gt) & pose.present_mask(result.source_keypoints)
  err = np.linalg.norm(result.source_keypoints[both] - gt[both], axis=-1)
  assert both.sum() >= 10 and np.mean(err < 0.1 * 256) >= 0.8
  assert transfer.write_outputs(result, str(tmp_path / "photo")) == [str(tmp_path / "photo.png"),
                                                                      str(tmp_path / "photo_panel.png")]


@needs_models
def test_video_target(tmp_path, drn_model, estimator, annotations):
  """A 4-frame MP4 of sample photos: every 2nd frame is used, at half the video's rate."""
  src_name, *frames = _names(annotations, 5)
  photos = [np.asarray(Image.open(os.path.join(SAMPLE, "img", n)).convert("RGB")) for n in frames]
  video = transfer.write_video(str(tmp_path / "clip.mp4"), photos, fps=6)
  result = transfer.transfer(drn_model, os.path.join(SAMPLE, "img", src_name), video, estimator=estimator,
                             frame_step=2)
  assert result.sequence and len(result.images) == 2 and result.fps == 3
  assert result.names == [f"{video} frame 0", f"{video} frame 2"]


@needs_models
def test_detector_finds_an_off_centre_person_and_the_largest_of_two(estimator, annotations):
  name = _names(annotations, 1)[0]
  person = Image.open(os.path.join(SAMPLE, "img", name)).convert("RGB")
  canvas = Image.new("RGB", (1000, 600), (255, 255, 255))
  canvas.paste(person, (800, 300))                           # bottom-right corner of a landscape photo
  found = transfer.estimate_photo_pose(np.asarray(canvas), "canvas", estimator)
  gt = annotations[name] + np.float32([300, 800])
  both = pose.present_mask(annotations[name]) & pose.present_mask(found.keypoints)
  assert np.mean(np.linalg.norm(found.keypoints[both] - gt[both], axis=-1) < 25.6) >= 0.8
  two = Image.new("RGB", (700, 450), (255, 255, 255))
  two.paste(person, (494, 184))
  two.paste(person.resize((264, 384)), (40, 10))             # the same person, 1.5 times larger
  found = transfer.estimate_photo_pose(np.asarray(two), "two.jpg", estimator)
  assert found.notes and "two.jpg: 2 people found; using the largest" in found.notes[0]
  np.testing.assert_allclose(found.keypoints[1], annotations[name][1] * 1.5 + [10, 40], atol=15)   # its neck


# ------------------------------------------------------------------------- command line
def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "transfer.py"), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_writes_a_png_and_reports_a_bad_keypoint_file(tmp_path, drn_model, annotations):
  export = inference.export(drn_model, str(tmp_path / "model"))
  src_name, tgt_name = _names(annotations, 2)
  source = os.path.join(SAMPLE, "img", src_name)
  src_kp = _patn_file(tmp_path, src_name, annotations[src_name])
  ok = _cli(f"--workdir={export}", f"--source={source}", f"--source_keypoints={src_kp}",
            f"--target={_patn_file(tmp_path, tgt_name, annotations[tgt_name])}", f"--output={tmp_path / 'cli.png'}")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert f"wrote {tmp_path / 'cli.png'}" in ok.stdout and os.path.isfile(tmp_path / "cli.png")
  bad = _openpose_json(tmp_path / "bad.json", [np.ones((7, 3))])
  proc = _cli(f"--workdir={export}", f"--source={source}", f"--source_keypoints={src_kp}", f"--target={bad}",
              f"--output={tmp_path / 'x.png'}")
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert lines[-1] == f"error: {bad}: people[0].pose_keypoints_2d: 21 values: expected 54 (18 joints × " \
                      "(x, y, confidence), COCO-18) or 75 (25 joints, BODY_25)", lines


@needs_models
def test_cli_photo_without_a_person(tmp_path, annotations):
  blank = tmp_path / "empty_room.jpg"
  Image.new("RGB", (640, 480), (235, 232, 225)).save(blank)
  tgt_name = _names(annotations, 1)[0]
  proc = _cli(f"--workdir={tmp_path / 'no_model_needed'}", f"--source={blank}",
              f"--target={_patn_file(tmp_path, tgt_name, annotations[tgt_name])}", f"--output={tmp_path / 'x.png'}")
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert lines == [f"error: {blank}: no person found (MediaPipe's person detector found no one in the 480x640 "
                   "photo)"], lines

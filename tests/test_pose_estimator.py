"""Tests for hpt_jax.metrics.pose_estimator (MediaPipe BlazePose -> OpenPose-18).

The model-dependent tests skip unless ``pose_landmark_full.tflite`` is in the models directory
(``python launch/fetch_models.py``). Measured on the whole 314-image sample (docs/pose_estimator.md):
96.2% of visible joints within 0.1*H, 89.7% within 0.05*H, PCKh 0.942; on the 12 images used here
about 0.98 within 0.1*H, so the thresholds below leave a wide margin.
"""

import os
import subprocess
import sys

from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
import pytest

from hpt_jax.metrics import pose_estimator as pe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = DEEPFASHION_SAMPLE
NUM_IMAGES = 12
MODEL = os.path.join(pe.default_model_dir(), pe.LANDMARK_MODEL)

needs_model = pytest.mark.skipif(
    not os.path.isfile(MODEL),
    reason=f"{MODEL} absent; download it with `{pe.FETCH_COMMAND}`")


@pytest.fixture(scope="module")
def sample():
  _, images, keypoints = pe.load_annotated_images(SAMPLE, limit=NUM_IMAGES)
  return images, keypoints


@pytest.fixture(scope="module")
def estimator():
  if not os.path.isfile(MODEL):
    pytest.skip(f"{MODEL} absent; download it with `{pe.FETCH_COMMAND}`")
  return pe.MediaPipePoseEstimator()


@pytest.fixture(scope="module")
def agreement(estimator, sample):
  images, keypoints = sample
  return pe.measure_agreement(estimator, images, keypoints)


def test_missing_model_error_names_paths_and_command(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    pe.MediaPipePoseEstimator(str(tmp_path))
  msg = str(e.value)
  assert str(tmp_path / pe.LANDMARK_MODEL) in msg
  assert "python launch/fetch_models.py" in msg


def test_import_does_not_import_tensorflow():
  code = ("import sys; import hpt_jax.metrics.pose_estimator; "
          "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
  assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_mapping_table():
  m = pe.BLAZEPOSE_TO_OPENPOSE
  assert len(m) == 18 and m[1] is None
  used = [j for j in m if j is not None]
  assert len(set(used)) == 17 and all(0 <= j < 33 for j in used)


@needs_model
def test_shape_dtype_and_range(agreement, sample):
  images, _ = sample
  pred = agreement["pred"]
  assert pred.shape == (NUM_IMAGES, 18, 2) and pred.dtype == np.float32
  present = np.all(pred != -1, axis=-1)
  missing = ~present
  assert np.all(pred[missing] == -1)  # both coordinates -1 together
  h, w = images.shape[1:3]
  assert np.all((pred[present][:, 0] >= 0) & (pred[present][:, 0] < h))
  assert np.all((pred[present][:, 1] >= 0) & (pred[present][:, 1] < w))
  # Neck = midpoint of the shoulders, present iff both are.
  both = present[:, 2] & present[:, 5]
  np.testing.assert_array_equal(present[:, 1], both)
  np.testing.assert_allclose(pred[both, 1], (pred[both, 2] + pred[both, 5]) / 2, atol=1e-4)


@needs_model
def test_agreement_with_ground_truth(agreement):
  assert agreement["within"][0.1] > 0.85, agreement["within"]
  assert agreement["within"][0.05] > 0.75, agreement["within"]
  assert agreement["pckh"] > 0.85, agreement["pckh"]
  assert agreement["missing_precision"] > 0.7, agreement["missing_precision"]


@needs_model
def test_left_right_mapping(agreement, sample):
  """Detected r-wrist (4) lies closer to the GT r-wrist than to the GT l-wrist (7), and vice versa."""
  _, gt = sample
  pred = agreement["pred"]
  both = np.all(gt[:, [4, 7]] != -1, axis=(1, 2))
  assert both.sum() >= 5
  for mine, other in ((4, 7), (7, 4)):
    det = np.all(pred[:, mine] != -1, axis=-1)
    d_same = np.linalg.norm(pred[:, mine] - gt[:, mine], axis=-1)
    d_swap = np.linalg.norm(pred[:, mine] - gt[:, other], axis=-1)
    frac = np.mean((det & (d_same < d_swap))[both])
    assert frac >= 0.7, (mine, frac)


@needs_model
def test_missing_joints(estimator, sample):
  images, gt = sample
  # Joints outside the image are -1: the top 96 rows hold no knee or ankle.
  top = np.ascontiguousarray(images[:4, :96])
  pred = estimator.estimate(top)
  assert pred.shape == (4, 18, 2)
  assert np.all(pred[:, [9, 10, 12, 13]] == -1)
  # A threshold above every visibility makes every joint missing.
  strict = pe.MediaPipePoseEstimator(visibility_threshold=1.01)
  assert np.all(strict.estimate(images[:2]) == -1)
  kps, vis, flag = estimator.estimate_with_scores(images[:2])
  assert vis.shape == (2, 18) and flag.shape == (2,)
  assert np.all((vis >= 0) & (vis <= 1)) and np.all((flag >= 0) & (flag <= 1))


@needs_model
def test_rejects_bad_input(estimator, sample):
  images, _ = sample
  with pytest.raises(ValueError):
    estimator.estimate(images[0])
  with pytest.raises(ValueError):
    estimator.estimate(images[:1].astype(np.float32))

"""Tests for hpt_jax.pose: Gaussian heatmaps, flip with L/R swap, validation, resizing."""

import math

import numpy as np
import pytest

from hpt_jax import pose


def _keypoints(**joints):
  """[18, 2] all missing except the named joints, given as (y, x)."""
  keypoints = np.full((pose.NUM_JOINTS, 2), -1.0, np.float32)
  for name, yx in joints.items():
    keypoints[pose.JOINT_NAMES.index(name)] = yx
  return keypoints


def _random_keypoints(rng, height=40, width=30, missing=4):
  keypoints = np.stack([rng.integers(0, height, 18), rng.integers(0, width, 18)], -1)
  keypoints = keypoints.astype(np.float32)
  keypoints[rng.choice(18, missing, replace=False)] = -1
  return keypoints


def test_constants():
  assert pose.NUM_JOINTS == 18 == len(pose.JOINT_NAMES)
  assert list(pose.FLIP_PERMUTATION) == [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]
  perm = np.array(pose.FLIP_PERMUTATION)
  np.testing.assert_array_equal(perm[perm], np.arange(18))  # an involution
  for k, j in enumerate(perm):  # swaps l_* with r_* and keeps the centre joints
    assert pose.JOINT_NAMES[k].replace("l_", "X").replace("r_", "l_").replace("X", "r_") == \
        pose.JOINT_NAMES[j]


def test_heatmap_hand_computed_values():
  heatmaps = pose.keypoints_to_heatmaps(_keypoints(nose=(5, 7)), 12, 14, sigma=2.0)
  assert heatmaps.shape == (12, 14, 18) and heatmaps.dtype == np.float32
  nose = heatmaps[..., 0]
  assert nose[5, 7] == 1.0
  np.testing.assert_allclose(nose[5, 9], math.exp(-4 / 8), rtol=1e-6)
  np.testing.assert_allclose(nose[7, 9], math.exp(-8 / 8), rtol=1e-6)
  np.testing.assert_allclose(nose[2, 7], math.exp(-9 / 8), rtol=1e-6)
  np.testing.assert_array_equal(heatmaps[..., 1:], 0.0)  # missing joints: all-zero channels


def test_heatmap_argmax_at_keypoint_and_range():
  rng = np.random.default_rng(0)
  keypoints = _random_keypoints(rng)
  heatmaps = pose.keypoints_to_heatmaps(keypoints, 40, 30, sigma=3.0)
  assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
  for k in range(18):
    if keypoints[k, 0] < 0:
      assert not heatmaps[..., k].any()
    else:
      assert np.unravel_index(np.argmax(heatmaps[..., k]), (40, 30)) == tuple(keypoints[k].astype(int))
      assert heatmaps[int(keypoints[k, 0]), int(keypoints[k, 1]), k] == 1.0


def test_heatmaps_batched_match_single():
  rng = np.random.default_rng(1)
  batch = np.stack([_random_keypoints(rng) for _ in range(3)])
  heatmaps = pose.keypoints_to_heatmaps(batch, 40, 30, sigma=2.5)
  assert heatmaps.shape == (3, 40, 30, 18)
  for i in range(3):
    np.testing.assert_array_equal(heatmaps[i], pose.keypoints_to_heatmaps(batch[i], 40, 30, 2.5))


def test_heatmap_half_missing_joint_is_missing():
  keypoints = _keypoints(nose=(3, 3))
  keypoints[1] = (4, -1)  # PATN: either coordinate -1 means missing
  assert not pose.keypoints_to_heatmaps(keypoints, 8, 8, 1.0)[..., 1].any()


def test_heatmap_bad_shape():
  with pytest.raises(ValueError):
    pose.keypoints_to_heatmaps(np.zeros((17, 2)), 8, 8, 1.0)


def test_flip_twice_is_identity():
  rng = np.random.default_rng(2)
  keypoints = _random_keypoints(rng)
  np.testing.assert_array_equal(pose.flip_keypoints(pose.flip_keypoints(keypoints, 30), 30),
                                keypoints)


def test_flip_left_wrist_becomes_right_wrist():
  flipped = pose.flip_keypoints(_keypoints(l_wrist=(10, 4)), width=30)
  np.testing.assert_array_equal(flipped[pose.JOINT_NAMES.index("r_wrist")], (10, 25))
  np.testing.assert_array_equal(flipped[pose.JOINT_NAMES.index("l_wrist")], (-1, -1))
  assert (flipped == -1).sum() == 2 * 17  # missing joints stay (-1, -1)


def test_flip_heatmaps_consistent():
  rng = np.random.default_rng(3)
  keypoints = _random_keypoints(rng)
  heatmaps = pose.keypoints_to_heatmaps(keypoints, 40, 30, 2.0)
  flipped = pose.keypoints_to_heatmaps(pose.flip_keypoints(keypoints, 30), 40, 30, 2.0)
  np.testing.assert_allclose(flipped, np.flip(heatmaps, axis=1)[..., list(pose.FLIP_PERMUTATION)],
                             atol=1e-6)


def test_validate_keypoints():
  pose.validate_keypoints(_keypoints(nose=(0, 0), neck=(39, 29)), 40, 30)
  with pytest.raises(ValueError, match="shape"):
    pose.validate_keypoints(np.zeros((17, 2)), 40, 30)
  with pytest.raises(ValueError, match="neck"):
    pose.validate_keypoints(_keypoints(neck=(40, 3)), 40, 30)
  with pytest.raises(ValueError, match="outside"):
    pose.validate_keypoints(_keypoints(nose=(3, -2)), 40, 30)


def test_resize_keypoints():
  keypoints = _keypoints(nose=(0, 0), neck=(255, 175), r_hip=(101, 51))
  resized = pose.resize_keypoints(keypoints, (256, 176), (128, 88))
  pose.validate_keypoints(resized, 128, 88)
  np.testing.assert_allclose(resized[[0, 1, 8]], [[0, 0], [127, 87], [50.25, 25.25]])
  assert (resized[pose.present_mask(keypoints) == 0] == -1).all()


# ------------------------------------------------------------ HPN local descriptors
def _random_skeleton(rng, h=256, w=176, missing=()):
  kp = np.stack([rng.uniform(0, h - 1, 18), rng.uniform(0, w - 1, 18)], axis=-1).astype(np.float32)
  kp[list(missing)] = -1
  return kp


@pytest.mark.parametrize("n", [18, 31, 44])
def test_local_descriptor_counts_and_points_on_limbs(n):
  rng = np.random.default_rng(n)
  kp = _random_skeleton(rng)
  points, valid = pose.local_descriptor_points(kp, n)
  assert points.shape == (n, 2) and valid.shape == (n,) and valid.all()
  np.testing.assert_array_equal(points[:18], kp)
  k = (n - 18) // 13
  for li, (a, b) in enumerate(pose.LOCAL_DESCRIPTOR_LIMBS):
    for j in range(k):
      p = points[18 + li * k + j]
      t = (j + 1) / (k + 1)
      # On the segment a→b, at fraction t (hand-computed interpolation).
      np.testing.assert_allclose(p, kp[a] + t * (kp[b] - kp[a]), rtol=0, atol=1e-4)
      d = kp[b] - kp[a]
      cross = d[0] * (p - kp[a])[1] - d[1] * (p - kp[a])[0]
      assert abs(cross) < 1e-2 * (np.linalg.norm(d) + 1)


def test_local_descriptor_points_missing_joint_invalidates_its_limbs():
  kp = _random_skeleton(np.random.default_rng(0), missing=(3,))  # right elbow missing
  points, valid = pose.local_descriptor_points(kp, 44)
  assert valid.sum() == 44 - 1 - 2 * 2     # the elbow, and 2 points on each of its 2 limbs
  assert np.all(points[~valid] == -1)
  limbs_with_3 = [i for i, l in enumerate(pose.LOCAL_DESCRIPTOR_LIMBS) if 3 in l]
  for li in limbs_with_3:
    assert not valid[18 + 2 * li:18 + 2 * li + 2].any()


@pytest.mark.parametrize("size", [(256, 176), (64, 44), (1024, 1024)])
def test_local_descriptor_boxes_inside_image_and_sized_h_over_8(size):
  h, w = size
  rng = np.random.default_rng(1)
  kp = _random_skeleton(rng, h, w, missing=(16,))
  kp[0] = [0, 0]            # a joint in the corner: its box is shifted inside, not shrunk
  kp[1] = [h - 1, w - 1]
  boxes, valid = pose.local_descriptor_boxes(kp, 44, size)
  assert boxes.shape == (44, 4) and boxes.dtype == np.int32
  b = boxes[valid]
  assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= h) and np.all(b[:, 3] <= w)
  np.testing.assert_array_equal(b[:, 2] - b[:, 0], h // 8)
  np.testing.assert_array_equal(b[:, 3] - b[:, 1], h // 8)
  np.testing.assert_array_equal(boxes[0], [0, 0, h // 8, h // 8])
  np.testing.assert_array_equal(boxes[1], [h - h // 8, w - h // 8, h, w])
  assert not valid[16] and np.all(boxes[16] == 0)
  # An interior joint's box is centred on it (rounded): centre = y0 + side // 2.
  kp2 = np.full((18, 2), -1, np.float32)
  kp2[5] = [100.4, 80.6]
  boxes2, valid2 = pose.local_descriptor_boxes(kp2, 18, (256, 176))
  np.testing.assert_array_equal(boxes2[5], [100 - 16, 81 - 16, 100 + 16, 81 + 16])
  assert valid2.sum() == 1


def test_local_descriptor_bad_arguments():
  kp = np.zeros((18, 2), np.float32)
  with pytest.raises(ValueError, match="18, 31 or 44"):
    pose.local_descriptor_points(kp, 20)
  with pytest.raises(ValueError, match="side"):
    pose.local_descriptor_boxes(kp, 18, (64, 44), side=50)

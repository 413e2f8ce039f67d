"""DRN's fine-grained metrics (§III-B, Tables IV-V, Fig. 7): retrieval recall@k on hand-made
embeddings, item ids of PATN names, per-part keypoint error curves on hand-made keypoints, the
face-identity aggregation, dlib's face identity on the bundled sample (skipped without the
``faces`` extra), and MediaPipe's hands: ROI geometry, side assignment, hand curves on hand-made
keypoints, the n/a path without the models, one sample photo (skipped without the models)."""

import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

from hpt_jax import data, errors, evaluation
from hpt_jax.metrics import face_identity, hand_landmarks, pckh, pose_estimator, retrieval


def test_item_id_of_patn_names():
  assert retrieval.item_id("fashionMENTees_Tanksid0000337203_3back.jpg") == "id00003372"
  assert retrieval.item_id("/x/fashionWOMENDressesid0000746601_7additional.jpg") == "id00007466"
  with pytest.raises(ValueError, match="no 'id' \\+ 8 digits"):
    retrieval.item_id("0002_c1s1_000451_03.jpg")


def test_recall_at_k_on_hand_made_embeddings():
  # gallery: 4 items on the axes of R^4 (cosine: only directions matter), item "b" twice
  gallery = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 5, 5, 0]], float)
  items = ["a", "b", "c", "d", "b"]
  query = np.array([
      [2, 0, 0, 0],        # a: nearest is a -> hit at 1
      [0, 0, 1, 0.1],      # wants d: c (.995), b+c [0,5,5,0] (.70), d (.10) -> d 3rd
      [1, 0.9, 0.8, 0],    # wants c: b+c (.77), a (.64), b (.58), c (.51) -> c 4th
      [0, 0, 0, 1],        # wants "e": not in the gallery -> never a hit, even at k > G
  ])
  r = retrieval.recall_at_k(query, ["a", "d", "c", "e"], gallery, items, ks=(1, 2, 3, 4, 10))
  assert r == {1: 0.25, 2: 0.25, 3: 0.5, 4: 0.75, 10: 0.75}
  # scale invariance and ties: equal similarities keep the gallery order
  r = retrieval.recall_at_k(np.array([[0, 0, 3, 3.0]]), ["d"], gallery, items, ks=(1, 2))
  assert r == {1: 0.0, 2: 1.0}
  with pytest.raises(ValueError, match="zero-norm"):
    retrieval.recall_at_k(np.zeros((1, 4)), ["a"], gallery, items)
  with pytest.raises(ValueError, match="query items"):
    retrieval.recall_at_k(query, ["a"], gallery, items)


def test_per_part_keypoint_error_curves_on_hand_made_keypoints():
  """Face at the body thresholds, hands at the doubled ones (DRN Fig. 7)."""
  thr_face, thr_hands = evaluation.PART_THRESHOLDS["face"], evaluation.PART_THRESHOLDS["hands"]
  assert thr_hands == tuple(2 * t for t in thr_face) == (10.0, 20.0, 40.0)
  target = np.zeros((2, 5, 2), np.float32) + 50
  target[1, 4] = -1                                 # not visible in the target: not counted
  errors_px = np.array([[0, 7, 12, 30, 3], [4, 15, 25, 100, 0]], np.float32)
  pred = target.copy()
  pred[..., 1] += errors_px                         # errors along x only
  pred[0, 4] = -1                                   # missing prediction: wrong at every α
  # 9 counted joints; errors 0,7,12,30,(missing) | 4,15,25,100
  np.testing.assert_allclose(pckh.keypoint_error_curve(pred, target, thr_face), [2 / 9, 3 / 9, 5 / 9])
  np.testing.assert_allclose(pckh.keypoint_error_curve(pred, target, thr_hands), [3 / 9, 5 / 9, 7 / 9])


def test_identity_scores_aggregation():
  a, b = np.zeros(128), np.zeros(128)
  b[0] = 0.65
  c = np.zeros(128)
  c[:2] = 0.3                                       # |c| = 0.424
  r = face_identity.identity_scores([a, a, a, None, a], [a, b, None, a, c])
  assert r["source_faces"] == 4 and r["generated_faces"] == 3 and r["pairs"] == 5
  assert r["distances"][0] == 0 and math.isinf(r["distances"][2]) and r["distances"][3] is None
  np.testing.assert_allclose(r["mean_distance"], (0 + 0.65 + math.sqrt(0.18)) / 3)
  assert r["accuracy"] == {0.6: 0.5, 0.7: 0.75}     # the missing generated face fails both
  none = face_identity.identity_scores([None], [a])
  assert none["source_faces"] == 0 and math.isnan(none["accuracy"][0.6]) and math.isnan(none["mean_distance"])


def test_missing_dlib_names_the_faces_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "dlib", None)   # import dlib -> ImportError
  with pytest.raises(errors.MissingDependencyError, match=r"hpt-jax\[faces\]"):
    face_identity.FaceModels()


def _sample_descriptors(models, limit=48):
  img_dir = os.path.join(data.DEEPFASHION_SAMPLE, "img")
  out = {}
  for name in sorted(os.listdir(img_dir))[:limit]:
    d, kp = models.analyse(np.asarray(Image.open(os.path.join(img_dir, name)).convert("RGB")))
    if d is not None:
      out[name] = (d, kp)
  return out


def test_dlib_identity_on_the_sample():
  pytest.importorskip("dlib")
  pytest.importorskip("face_recognition_models")
  models = face_identity.load()
  found = _sample_descriptors(models)
  assert len(found) >= 10
  name, (d, kp) = next(iter(found.items()))
  img = np.asarray(Image.open(os.path.join(data.DEEPFASHION_SAMPLE, "img", name)).convert("RGB"))
  d2, kp2 = models.analyse(img)
  assert np.linalg.norm(d - d2) == 0.0 and np.array_equal(kp, kp2)      # same image -> distance 0
  assert kp.shape == (5, 2) and (kp[:, 0] < img.shape[0]).all() and (kp[:, 1] < img.shape[1]).all()
  names = list(found)
  same, diff = [], []
  for i in range(len(names)):
    for j in range(i + 1, len(names)):
      dist = np.linalg.norm(found[names[i]][0] - found[names[j]][0])
      (same if retrieval.item_id(names[i]) == retrieval.item_id(names[j]) else diff).append(dist)
  assert same and diff
  assert np.mean(np.array(same) < 0.6) > np.mean(np.array(diff) < 0.6) + 0.3
  assert models.analyse(np.zeros((256, 176, 3), np.uint8)) == (None, None)   # no face


# ------------------------------------------------------------ hands (MediaPipe palm + landmarks)
def test_hand_roi_geometry_and_sides():
  """The ROI's crop-to-image map (rotation: the crop's up is the image's (sin r, -cos r)), the
  rotation that makes a vector point up, and the wrist-distance assignment of hands to sides."""
  up_right = hand_landmarks._rotation_up((10.0, 10.0), (10.0, 20.0))     # (y, x): pointing right
  assert up_right == pytest.approx(math.pi / 2)
  assert hand_landmarks._rotation_up((10.0, 10.0), (0.0, 10.0)) == pytest.approx(0.0)
  m = hand_landmarks.roi_transform(hand_landmarks.HandROI(cy=50.0, cx=60.0, side=20.0, rotation=up_right), 10)
  apply = lambda x, y: tuple(np.round(m[:, :2] @ [x, y] + m[:, 2], 6))  # noqa: E731
  assert apply(5, 5) == (60.0, 50.0)            # crop centre -> ROI centre (x, y)
  assert apply(5, 0) == (70.0, 50.0)            # crop top -> 10 px (half the side) to the right
  assert apply(0, 5) == (60.0, 40.0)            # crop left -> up in the image
  body = np.full((18, 2), -1.0)
  body[4], body[7] = (100, 40), (100, 120)      # right wrist at x=40, left at x=120 (y, x)
  wrists = [(104, 118), (95, 45), (100, 80), (160, 40)]
  assert hand_landmarks.assign_sides(wrists, body, 30.0) == {0: 1, 1: 0}
  assert hand_landmarks.assign_sides(wrists[2:], body, 30.0) == {}       # both hands too far
  assert hand_landmarks.assign_sides(wrists[2:], body, 45.0) == {0: 0}   # x=80 is 40 px from both: closest pair first, then unique
  body[7] = -1
  assert hand_landmarks.assign_sides(wrists, body, 30.0) == {0: 1}       # no left wrist, no left hand


def test_hand_curves_on_hand_made_keypoints():
  """Hand curves at the doubled thresholds (10/20/40 px) over the real targets' found hands; a hand
  missing in the generated image counts as wrong at every α, an extra hand is not counted."""
  n_lm = hand_landmarks.NUM_HAND_LANDMARKS
  gt = np.full((2, 2 * n_lm, 2), -1.0, np.float32)
  gt[0, :n_lm] = gt[1, :n_lm] = gt[1, n_lm:] = np.stack([100 + np.arange(n_lm), 50 + np.arange(n_lm)], -1)
  model = np.full_like(gt, -1.0)
  model[0, :n_lm] = gt[0, :n_lm] + [3.0, 4.0]     # 5 px off: within 10
  model[1, :n_lm] = gt[1, :n_lm] + [0.0, 15.0]    # 15 px off: within 20
  model[0, n_lm:] = 30.0                          # a left hand the target lacks: not counted
  rows = ["model (refined)", evaluation.SOURCE_ROW, evaluation.GT_ROW]
  hand_kp = {"model (refined)": [model[:1], model[1:]], evaluation.SOURCE_ROW: [np.full_like(gt, -1.0)],
             evaluation.GT_ROW: [gt]}
  c = evaluation._hand_curves(rows, hand_kp, None)
  assert c["target_hands"] == 3 and c["target_images"] == 2
  assert c["hands_found"] == {"model (refined)": 3, evaluation.SOURCE_ROW: 0, evaluation.GT_ROW: 3}
  np.testing.assert_allclose(c["model (refined)"], [21 / 63, 42 / 63, 42 / 63])   # the left hand of image 1 is missing
  assert c[evaluation.SOURCE_ROW] == [0.0, 0.0, 0.0] and evaluation.GT_ROW not in c
  assert evaluation._hand_curves(rows, {}, "n/a (why)") == {"reason": "n/a (why)"}


def test_hands_n_a_when_the_models_are_missing(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="fetch_models.py") as e:
    hand_landmarks.MediaPipeHandEstimator(model_dir=str(tmp_path))
  assert isinstance(e.value, errors.UserError)
  monkeypatch.setenv(pose_estimator.MODELS_DIR_ENV, str(tmp_path))
  evaluation._load_hands.cache_clear()
  try:
    est, reason = evaluation._load_hands()
  finally:
    evaluation._load_hands.cache_clear()
  assert est is None and reason.startswith("n/a") and "fetch_models.py" in reason


def test_hand_estimator_on_a_sample_photo():
  """Both hands of a front-view photo, on the side of their annotated wrists; the mirrored photo
  gives the mirrored hands on the other sides."""
  try:
    est = hand_landmarks.MediaPipeHandEstimator(num_threads=1)
  except FileNotFoundError:
    pytest.skip("MediaPipe hand models absent (python launch/fetch_models.py)")
  name = "fashionMENSweatersid0000321602_1front.jpg"
  img = np.asarray(Image.open(os.path.join(data.DEEPFASHION_SAMPLE, "img", name)).convert("RGB"))
  body = np.full((18, 2), -1.0, np.float32)
  body[4], body[7] = (188, 37), (198, 130)       # annotated right, left wrist (y, x)
  n_lm = hand_landmarks.NUM_HAND_LANDMARKS
  kp, presence = est.estimate(np.stack([img, img[:, ::-1]]),
                              np.stack([body, np.stack([body[:, 0], 175 - body[:, 1]], -1)[[0, 1, 2, 3, 7, 5, 6, 4] + list(range(8, 18))]]))
  assert (presence >= 0.5).all()
  assert (kp != -1).all()                        # both hands, all 21 landmarks, in both images
  for side, wrist in ((0, body[4]), (1, body[7])):
    assert np.linalg.norm(kp[0, side * n_lm] - wrist) < 12     # landmark 0 (wrist) near the annotated wrist
  mirrored = np.stack([kp[1, :, 0], 175 - kp[1, :, 1]], -1)
  swapped = np.concatenate([mirrored[n_lm:], mirrored[:n_lm]])   # the mirror swaps the sides
  assert np.abs(swapped - kp[0]).max() < 4

"""DRN's fine-grained metrics (§III-B, Tables IV-V, Fig. 7): retrieval recall@k on hand-made
embeddings, item ids of PATN names, per-part keypoint error curves on hand-made keypoints, the
face-identity aggregation, and dlib's face identity on the bundled sample (skipped without the
``faces`` extra)."""

import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

from hpt_jax import data, errors, evaluation
from hpt_jax.metrics import face_identity, pckh, retrieval


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

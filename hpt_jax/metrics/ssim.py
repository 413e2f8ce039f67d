"""SSIM family of image-quality metrics in ``jax.numpy``.

All functions take NHWC image batches, either ``uint8`` in [0, 255] or any
float dtype (whose value range must be described by ``data_range``).  They are
batched, run on whatever JAX backend is active and are jittable (the
``data_range`` argument may be a traced array).

Numerics
--------
* Filtering is written as explicit shifted multiply-adds (no ``conv`` /
  ``matmul``), so the result does not depend on backend matmul precision
  (e.g. TF32 on NVIDIA GPUs).
* Computation is in float32 (float64 if ``jax_enable_x64`` is on and a float64
  input is given).  To avoid catastrophic cancellation in
  ``E[x^2] - E[x]^2`` the (co)variances are computed from images shifted by
  their per-image, per-channel mean; this is mathematically identical to the
  reference formula.  Agreement with ``skimage`` (float64) is ~1e-6.

Protocol sources
----------------
* ``ssim`` reproduces ``skimage.metrics.structural_similarity(...,
  channel_axis=-1)`` (scikit-image 0.26; identical to the older
  ``compare_ssim(multichannel=True)`` used by PATN).
* ``ssim_patn``: PATN (Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation",
  CVPR 2019, arXiv:1904.03349), ``tool/getMetrics_fashion.py`` of tengteng95/Pose-Transfer
  @ 281ee2d.
* ``ssim_plain``: same Gaussian settings, unpadded 256x176, data_range 255.
  (DIAF — Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019,
  arXiv:1903.11326 — used skimage *defaults*, i.e. a 7x7 uniform window, see
  ly015/intrinsic_flow @ 94ea8f0 ``models/modules.py``: call ``ssim(..., gaussian_weights=False,
  use_sample_covariance=True, data_range=255)`` for that.)
* ``ms_ssim``: Wang, Simoncelli & Bovik 2003, following the conventions of
  ``pytorch_msssim.ms_ssim`` (VainF), which for images whose sizes stay even
  at every scale (256x176, 256x256) equals ``tf.image.ssim_multiscale``.
* ``local_ssim``: HPN (Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training",
  arXiv:2008.11898, 2020; section 4.2) "local-SSIM": SSIM over corresponding
  local regions; the region generator lives elsewhere.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import functools

import numpy as np
import jax
import jax.numpy as jnp

__all__ = [
    "ssim",
    "ssim_map",
    "ssim_patn",
    "ssim_plain",
    "ms_ssim",
    "local_ssim",
    "MS_SSIM_WEIGHTS",
    "PATN_PAD",
]

ArrayLike = Union[np.ndarray, jnp.ndarray]

#: Scale weights of Wang et al. 2003 (also pytorch_msssim / TF defaults).
MS_SSIM_WEIGHTS: Tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: PATN pads 40 white columns on each side (256x176 -> 256x256).
PATN_PAD: int = 40
_TRUNCATE = 3.5  # skimage's Gaussian truncation for SSIM


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _as_float(x: ArrayLike) -> jnp.ndarray:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.float32)


def _check_pair(a, b) -> Tuple[jnp.ndarray, jnp.ndarray]:
    a = _as_float(a)
    b = _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim != 4:
        raise ValueError(f"images must be NHWC (4-D), got shape {a.shape}")
    dt = jnp.promote_types(a.dtype, b.dtype)
    return a.astype(dt), b.astype(dt)


def _data_range_array(data_range, n: int, dtype) -> jnp.ndarray:
    r = jnp.asarray(data_range, dtype=dtype)
    if r.ndim == 0:
        r = jnp.broadcast_to(r, (n,))
    if r.shape != (n,):
        raise ValueError(f"data_range must be a scalar or shape [N]=({n},), got {r.shape}")
    return r


def _gaussian_taps(sigma: float, radius: int) -> np.ndarray:
    """Taps of scipy.ndimage.gaussian_filter1d (normalised, length 2r+1)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * x * x)
    return w / w.sum()


def _fir_axis(x: jnp.ndarray, taps: np.ndarray, axis: int, pad_mode: Optional[str]) -> jnp.ndarray:
    """1-D correlation along ``axis`` of a [N,H,W,C] array.

    pad_mode 'symmetric' == scipy.ndimage mode='reflect' (same output size);
    None == 'valid' correlation (output shrinks by len(taps)-1).
    """
    k = len(taps)
    r = (k - 1) // 2
    if pad_mode is not None:
        pw = [(0, 0)] * x.ndim
        pw[axis] = (r, k - 1 - r)
        x = jnp.pad(x, pw, mode=pad_mode)
    n_out = x.shape[axis] - (k - 1)
    out = None
    for i, w in enumerate(taps):
        sl = jax.lax.slice_in_dim(x, i, i + n_out, axis=axis)
        term = sl * jnp.asarray(w, dtype=x.dtype)
        out = term if out is None else out + term
    return out


def _filter2d(x, taps, pad_mode):
    return _fir_axis(_fir_axis(x, taps, 1, pad_mode), taps, 2, pad_mode)


def _mean_hw(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over axes (1, 2) done hierarchically (better float32 accuracy)."""
    return jnp.mean(jnp.mean(x, axis=2), axis=1)


def _ssim_components(a, b, taps, pad_mode, data_range, cov_norm, K1, K2):
    """Per-pixel luminance*cs (S) and cs maps, [N,H',W',C]."""
    # Shift by per-image/channel mean: exact for (co)variances, better numerics.
    c = 0.5 * (_mean_hw(a) + _mean_hw(b))[:, None, None, :]
    a0 = a - c
    b0 = b - c
    f = lambda z: _filter2d(z, taps, pad_mode)
    ux0 = f(a0)
    uy0 = f(b0)
    vx = cov_norm * (f(a0 * a0) - ux0 * ux0)
    vy = cov_norm * (f(b0 * b0) - uy0 * uy0)
    vxy = cov_norm * (f(a0 * b0) - ux0 * uy0)
    ux = ux0 + c
    uy = uy0 + c
    R = data_range[:, None, None, None]
    C1 = (K1 * R) ** 2
    C2 = (K2 * R) ** 2
    lum = (2 * ux * uy + C1) / (ux * ux + uy * uy + C1)
    cs = (2 * vxy + C2) / (vx + vy + C2)
    return lum * cs, cs


def _resolve_window(gaussian_weights, sigma, win_size):
    if sigma < 0:
        raise ValueError("sigma must be positive")
    if gaussian_weights:
        radius = int(_TRUNCATE * sigma + 0.5)
        taps = _gaussian_taps(sigma, radius)
        if win_size is None:
            win_size = 2 * radius + 1
    else:
        if win_size is None:
            win_size = 7
        taps = None
    if win_size % 2 != 1:
        raise ValueError("Window size must be odd.")
    if taps is None:
        taps = np.full((win_size,), 1.0 / win_size)
    return taps, int(win_size)


# --------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------
def ssim_map(
    a: ArrayLike,
    b: ArrayLike,
    *,
    data_range,
    gaussian_weights: bool = True,
    sigma: float = 1.5,
    win_size: Optional[int] = None,
    use_sample_covariance: bool = False,
    K1: float = 0.01,
    K2: float = 0.03,
) -> jnp.ndarray:
    """Per-pixel SSIM map averaged over channels (uncropped), skimage semantics.

    Args:
      a, b: images [N,H,W,C], uint8 or float; same shape.
      data_range: scalar or [N] array, the dynamic range of the images
        (255 for uint8 in [0,255], 2 for [-1,1] floats, ...).
      gaussian_weights, sigma, win_size, use_sample_covariance, K1, K2: as in
        :func:`ssim`.

    Returns:
      float [N,H,W]: the skimage ``full=True`` map ``S`` averaged over the C
      channels, *without* the (win_size-1)//2 border crop.  Borders use
      scipy.ndimage ``mode='reflect'`` (half-sample symmetric) padding.

    Raises:
      ValueError: shape mismatch, non-4-D input, even window, window larger
        than the image, bad data_range shape.

    Source: scikit-image 0.26 ``skimage/metrics/_structural_similarity.py``.
    """
    a, b = _check_pair(a, b)
    taps, win = _resolve_window(gaussian_weights, sigma, win_size)
    if min(a.shape[1], a.shape[2]) < win:
        raise ValueError(f"win_size {win} exceeds image extent {a.shape[1:3]}")
    n = a.shape[0]
    dr = _data_range_array(data_range, n, a.dtype)
    NP = win ** 2
    cov_norm = NP / (NP - 1) if use_sample_covariance else 1.0
    return _ssim_map_jit(a, b, dr, tuple(float(t) for t in taps), cov_norm, K1, K2)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _ssim_map_jit(a, b, dr, taps, cov_norm, K1, K2):
    S, _ = _ssim_components(a, b, np.asarray(taps), "symmetric", dr, cov_norm, K1, K2)
    return jnp.mean(S, axis=-1)


def ssim(
    a: ArrayLike,
    b: ArrayLike,
    *,
    data_range,
    gaussian_weights: bool = True,
    sigma: float = 1.5,
    win_size: Optional[int] = None,
    use_sample_covariance: bool = False,
    K1: float = 0.01,
    K2: float = 0.03,
) -> jnp.ndarray:
    """Per-image mean SSIM, identical in behaviour to skimage.

    Equivalent to, for each image i::

        skimage.metrics.structural_similarity(a[i], b[i], channel_axis=-1,
            data_range=data_range[i], gaussian_weights=gaussian_weights,
            sigma=sigma, win_size=win_size,
            use_sample_covariance=use_sample_covariance, K1=K1, K2=K2)

    i.e. per channel: Gaussian filter (truncate=3.5, so sigma=1.5 -> 11 taps)
    or uniform ``win_size`` filter, scipy ``mode='reflect'`` borders, population
    (or sample) covariance, crop of (win_size-1)//2 pixels on every side, spatial
    mean; then mean over channels.  NOTE the defaults here are PATN's
    (gaussian_weights=True, use_sample_covariance=False), *not* skimage's.
    With gaussian_weights=True the filter width is set by sigma alone; an
    explicit ``win_size`` only changes the crop and the sample-covariance
    factor (exactly as in skimage).

    Args:
      a, b: [N,H,W,C] uint8 in [0,255] or float images (same shape).
      data_range: scalar or [N] array; dynamic range used in C1=(K1*R)^2,
        C2=(K2*R)^2.  Required (as skimage requires it for floats).
      gaussian_weights: Gaussian (True) or uniform (False) window.
      sigma: Gaussian std in pixels.
      win_size: odd window size; None -> 2*int(3.5*sigma+0.5)+1 (Gaussian) or 7.
      use_sample_covariance: N/(N-1) covariance normalisation if True.
      K1, K2: SSIM stabilising constants.

    Returns:
      float32 [N] SSIM values in [-1, 1] (1 for identical images).

    Raises:
      ValueError: shape mismatch / not 4-D / even window / window larger than
        the image / data_range not scalar or [N].

    Source: scikit-image 0.26 structural_similarity; Wang et al. 2004.
    """
    a, b = _check_pair(a, b)
    taps, win = _resolve_window(gaussian_weights, sigma, win_size)
    if min(a.shape[1], a.shape[2]) < win:
        raise ValueError(f"win_size {win} exceeds image extent {a.shape[1:3]}")
    n = a.shape[0]
    dr = _data_range_array(data_range, n, a.dtype)
    NP = win ** 2
    cov_norm = NP / (NP - 1) if use_sample_covariance else 1.0
    return _ssim_jit(a, b, dr, tuple(float(t) for t in taps), win, cov_norm, K1, K2)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _ssim_jit(a, b, dr, taps, win, cov_norm, K1, K2):
    S, _ = _ssim_components(a, b, np.asarray(taps), "symmetric", dr, cov_norm, K1, K2)
    p = (win - 1) // 2
    S = S[:, p : S.shape[1] - p, p : S.shape[2] - p, :]
    return jnp.mean(_mean_hw(S), axis=-1)


def _check_uint8_pair(g, t):
    g = np.asarray(g) if not isinstance(g, jnp.ndarray) else g
    t = np.asarray(t) if not isinstance(t, jnp.ndarray) else t
    if g.dtype != np.uint8 or t.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {g.dtype} and {t.dtype}")
    if g.shape != t.shape or g.ndim != 4 or g.shape[-1] != 3:
        raise ValueError(f"expected matching [N,H,W,3] images, got {g.shape} and {t.shape}")
    return jnp.asarray(g), jnp.asarray(t)


def ssim_patn(generated_uint8: ArrayLike, target_uint8: ArrayLike) -> jnp.ndarray:
    """SSIM under the PATN DeepFashion protocol.

    Protocol (PATN tool/getMetrics_fashion.py, tengteng95/Pose-Transfer @ 281ee2d):
    pad 40 white (255) columns on the left and right (256x176 -> 256x256) of
    both images, then ``compare_ssim(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, multichannel=True,
    data_range=gen.max() - gen.min())`` where the data range is taken per
    image from the *padded generated* image (so it is 255 - gen.min()).
    Average the returned values over the test set to get the paper number.

    Args:
      generated_uint8, target_uint8: uint8 [N,H,W,3] in [0,255]
        (normally H,W = 256,176).

    Returns:
      float32 [N] per-image SSIM.

    Raises:
      TypeError: inputs not uint8.  ValueError: shape mismatch / not [N,H,W,3].
    """
    g, t = _check_uint8_pair(generated_uint8, target_uint8)
    pw = ((0, 0), (0, 0), (PATN_PAD, PATN_PAD), (0, 0))
    g = jnp.pad(g, pw, constant_values=255)
    t = jnp.pad(t, pw, constant_values=255)
    dr = (jnp.max(g, axis=(1, 2, 3)).astype(jnp.float32)
          - jnp.min(g, axis=(1, 2, 3)).astype(jnp.float32))
    return ssim(g, t, data_range=dr, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)


def ssim_plain(generated_uint8: ArrayLike, target_uint8: ArrayLike) -> jnp.ndarray:
    """SSIM on unpadded images, data_range 255, PATN's Gaussian settings.

    Same as :func:`ssim_patn` but without the white padding and with a fixed
    data_range of 255 (Gaussian sigma 1.5, 11-tap window, population
    covariance, skimage semantics).

    Args:
      generated_uint8, target_uint8: uint8 [N,H,W,3] in [0,255] (e.g. 256x176).

    Returns:
      float32 [N] per-image SSIM in [-1,1].

    Raises:
      TypeError: inputs not uint8.  ValueError: shape mismatch / not [N,H,W,3].
    """
    g, t = _check_uint8_pair(generated_uint8, target_uint8)
    return ssim(g, t, data_range=255.0, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)


# --------------------------------------------------------------------------
# MS-SSIM
# --------------------------------------------------------------------------
def _avg_pool2_pt(x: jnp.ndarray) -> jnp.ndarray:
    """pytorch_msssim downsampling: F.avg_pool2d(k=2, s=2, padding=s%2)
    (zero padding on both sides, count_include_pad=True)."""
    ph = x.shape[1] % 2
    pw = x.shape[2] % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    H2 = x.shape[1] // 2
    W2 = x.shape[2] // 2
    x = x[:, : 2 * H2, : 2 * W2, :]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def ms_ssim_min_size(win_size: int = 11, levels: int = 5) -> int:
    """Smallest image side (pixels) accepted by :func:`ms_ssim`:
    (win_size-1)*2**(levels-1) + 1 (161 for the defaults)."""
    return (win_size - 1) * 2 ** (levels - 1) + 1


def ms_ssim(
    a: ArrayLike,
    b: ArrayLike,
    data_range,
    *,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
) -> jnp.ndarray:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), per image.

    Conventions = ``pytorch_msssim.ms_ssim(X, Y, data_range, size_average=False)``
    (VainF/pytorch-msssim): ``win_size``-tap Gaussian (sigma 1.5, taps
    exp(-x^2/2sigma^2) normalised, no truncation rule) applied as a 'valid'
    separable filter (no padding); population covariance; at each of the first
    L-1 scales take relu(mean contrast-structure cs), at the last scale
    relu(mean SSIM); downsample by 2x2 average pooling (zero-pad 1 on both
    sides of an odd dimension, count_include_pad); combine per channel as
    prod_l v_l ** w_l, then mean over channels.  For image sizes that stay
    even through all poolings (256x176, 256x256) this also equals
    ``tf.image.ssim_multiscale``.

    Args:
      a, b: [N,H,W,C] uint8 or float images, same shape.
      data_range: scalar or [N]; value range (255 for uint8, 2 for [-1,1]).
      weights: per-scale exponents (default Wang 2003, 5 scales).
      win_size: Gaussian window size (odd), sigma: its std in pixels.
      K1, K2: SSIM constants.

    Returns:
      float32 [N] MS-SSIM in [0, 1] (1 for identical images).

    Raises:
      ValueError: if min(H, W) < (win_size-1)*2**(L-1)+1 (161 px for the
        defaults; 256x176 is fine), on shape mismatch or bad data_range.
    """
    a, b = _check_pair(a, b)
    levels = len(weights)
    min_side = ms_ssim_min_size(win_size, levels)
    if min(a.shape[1], a.shape[2]) < min_side:
        raise ValueError(
            f"ms_ssim with {levels} scales and win_size {win_size} needs images of at "
            f"least {min_side}x{min_side} pixels (smaller side >= {min_side}); got "
            f"{a.shape[1]}x{a.shape[2]}")
    if win_size % 2 != 1:
        raise ValueError("Window size must be odd.")
    dr = _data_range_array(data_range, a.shape[0], a.dtype)
    x = np.arange(win_size, dtype=np.float64) - (win_size - 1) / 2.0
    taps = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    taps = taps / taps.sum()
    return _ms_ssim_jit(a, b, dr, tuple(float(t) for t in taps),
                        tuple(float(w) for w in weights), K1, K2)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _ms_ssim_jit(a, b, dr, taps, weights, K1, K2):
    taps = np.asarray(taps)
    vals = []
    L = len(weights)
    for lvl in range(L):
        S, cs = _ssim_components(a, b, taps, None, dr, 1.0, K1, K2)
        if lvl < L - 1:
            vals.append(jax.nn.relu(_mean_hw(cs)))  # [N,C]
            a = _avg_pool2_pt(a)
            b = _avg_pool2_pt(b)
        else:
            vals.append(jax.nn.relu(_mean_hw(S)))
    v = jnp.stack(vals, axis=0)  # [L,N,C]
    w = jnp.asarray(weights, dtype=v.dtype)[:, None, None]
    return jnp.mean(jnp.prod(v ** w, axis=0), axis=-1)


# --------------------------------------------------------------------------
# local SSIM
# --------------------------------------------------------------------------
def local_ssim(
    a: ArrayLike,
    b: ArrayLike,
    boxes: ArrayLike,
    data_range,
    *,
    return_per_box: bool = False,
    **ssim_kwargs,
):
    """Local-SSIM: SSIM averaged over given regions (HPN section 4.2).

    Implementation choice: the per-pixel SSIM map (skimage semantics, see
    :func:`ssim_map`; channel-averaged, reflect-padded borders, *no* border
    crop) is computed once on the full images, and each region's SSIM is the
    mean of that map inside its box.  This differs from cropping each region
    and running SSIM on the crop (crops would re-pad at region borders); the
    HPN paper does not specify which it did.  Per image, the result is the
    mean over its valid boxes.

    Args:
      a, b: [N,H,W,C] uint8 or float images (same shape).
      boxes: int [N,R,4] (y0, x0, y1, x1) pixel boxes, end-exclusive.
        Coordinates are clipped to the image.  A box is skipped (invalid) when
        y1 <= y0 or x1 <= x0 after clipping (e.g. padding rows with y1<=y0).
      data_range: scalar or [N] image range (255 for uint8).
      return_per_box: also return the [N,R] per-box values (NaN for invalid).
      **ssim_kwargs: gaussian_weights, sigma, win_size, use_sample_covariance,
        K1, K2 forwarded to :func:`ssim_map` (defaults: Gaussian 1.5,
        population covariance).

    Returns:
      float32 [N] local-SSIM (NaN for an image without any valid box), or
      ``(local [N], per_box [N,R])`` if return_per_box.

    Raises:
      ValueError: boxes not of shape [N,R,4], plus those of :func:`ssim_map`.
    """
    smap = ssim_map(a, b, data_range=data_range, **ssim_kwargs)  # [N,H,W]
    boxes = jnp.asarray(boxes)
    N, H, W = smap.shape
    if boxes.ndim != 3 or boxes.shape[0] != N or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be int [N={N},R,4], got {boxes.shape}")
    per_box, local = _local_from_map(smap, boxes.astype(jnp.int32))
    if return_per_box:
        return local, per_box
    return local


@jax.jit
def _local_from_map(smap, boxes):
    N, H, W = smap.shape
    y0 = jnp.clip(boxes[..., 0], 0, H)
    x0 = jnp.clip(boxes[..., 1], 0, W)
    y1 = jnp.clip(boxes[..., 2], 0, H)
    x1 = jnp.clip(boxes[..., 3], 0, W)
    valid = (y1 > y0) & (x1 > x0)  # [N,R]
    hh = jnp.arange(H)
    ww = jnp.arange(W)
    ry = ((hh >= y0[..., None]) & (hh < y1[..., None])).astype(smap.dtype)  # [N,R,H]
    cx = ((ww >= x0[..., None]) & (ww < x1[..., None])).astype(smap.dtype)  # [N,R,W]
    # Row sums inside the x-range, then sum over rows inside the y-range.
    rows = jnp.einsum("nhw,nrw->nrh", smap, cx, precision=jax.lax.Precision.HIGHEST)
    tot = jnp.sum(rows * ry, axis=-1)
    area = jnp.maximum((y1 - y0) * (x1 - x0), 1).astype(smap.dtype)
    per_box = jnp.where(valid, tot / area, jnp.nan)
    nvalid = jnp.sum(valid, axis=-1)
    local = jnp.where(
        nvalid > 0,
        jnp.sum(jnp.where(valid, per_box, 0.0), axis=-1) / jnp.maximum(nvalid, 1),
        jnp.nan,
    )
    return per_box, local

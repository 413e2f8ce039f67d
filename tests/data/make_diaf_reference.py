r"""Regenerates ``tests/data/diaf_reference/``: DIAF's reference PyTorch networks at reduced width,
with seeded weights, their state dicts and their outputs in both batch-norm modes, for
``tests/test_diaf_import.py`` (which runs without torch). Not run by CI.

Reference code (public; imported from a checkout given on the command line, never copied): Li,
Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019
(arXiv:1903.11326): ly015/intrinsic_flow @ 94ea8f0b6c2e9d6380a29055eaa5b0068e894a25,
``models/networks.py`` (``FlowUnet``, ``DualUnetGenerator``,
``UnetGenerator_MultiOutput``) and ``models/modules.py`` (``warp_acc_flow``).

Run (needs torch, which is NOT a dependency of hpt-jax; a CPU build is enough)::

    git clone https://github.com/ly015/intrinsic_flow /tmp/intrinsic_flow
    git -C /tmp/intrinsic_flow checkout 94ea8f0
    python tests/data/make_diaf_reference.py --repo=/tmp/intrinsic_flow

Shims for 2019-era code on current torch/NumPy, applied at import time (the checkout is not
edited): ``np.int`` = ``int`` (``FlowUnet``); stub ``torchvision`` and ``skimage.measure`` modules
(imported by ``models/modules.py``/``networks.py`` for the VGG loss and metrics, unused here);
``F.upsample`` = ``F.interpolate`` if missing; ``F.grid_sample`` with ``align_corners=True``,
PyTorch 0.4's behaviour that ``warp_acc_flow``'s ``2·x/(W−1) − 1`` grid assumes (the default
became ``False`` in 1.3); ``ResidualBlock(dim, None)`` gets ``dim_a=0`` (its ``None <= 0`` test
is Python 2 only).

Modules (``norm='batch'``, ReLU activation, as ``models/pose_transfer_model.py`` builds them):

* ``flow``: ``FlowUnet(36, nf=4, num_scale=3, max_nf=16)`` (channels 8 → 16, capped) on 32×16
  binary-disk poses.
* ``generator``: ``DualUnetGenerator(18, 3, 3, nf=4, max_nf=8, num_scales=3, num_warp_scales=2,
  vis_mode='residual')`` (its two encoders share the down-sampling convolutions, as the reference's
  are) fed the flow module's masked flow (×20) and visibility, output ``tanh``.
* ``pixel_warp``: ``UnetGenerator_MultiOutput(9, [1], nf=4, max_nf=8, num_scales=3)`` fed
  ``img_out_G + img_warp + vis_out + flow_out``, output ``sigmoid``.

Weights: conv weights N(0, 1/fan_in), biases and BN shifts N(0, 0.1), BN scales 1 + N(0, 0.2),
running means N(0, 0.3), running variances U(0.5, 1.5); one seed per module.

Each module runs twice on the same inputs (batch 3): ``eval()`` (running statistics; the
``running`` mode) and ``train()`` under ``no_grad`` (batch statistics; the ``reference`` mode —
what the reference does for ``netG``/``netPW`` at test time). The state dict is saved before the
train-mode run (which updates the running statistics). The end-to-end chain is
``models/pose_transfer_model.py`` ``forward`` (flow module in eval mode, ``vis = argmax``,
``flow·20·[vis < 2]``, ``warp_acc_flow(img_1, flow, mask)``, generator, pixel-warp net, fusion).

Outputs: ``diaf_reference/{flow,generator,pixel_warp}.pth`` (state dicts, legacy ``torch.save``
format like the 2019 release), ``diaf_reference/reference_io.npz`` (NHWC float32): inputs
``source_image`` [3, 32, 16, 3], ``source_pose``/``target_pose`` [3, 32, 16, 18], ``gen_flow``
[3, 32, 16, 2] pixels and ``gen_vis`` [3, 32, 16] (random inputs of the generator test),
``pw_generated``/``pw_warped`` (random inputs of the pixel-warp test); per mode ``M`` in
(``running``, ``reference``): ``flow/M/flow`` (×20, pixels), ``flow/M/vis_logits``,
``flow/M/pyramid_<s>``, ``generator/M/image``, ``pixel_warp/M/logits``, ``pixel_warp/M/mask``;
the chain ``chain/{flow,vis,warped,generated,mask,final}`` (generator and pixel-warp net in
batch-statistics mode); ``meta`` (JSON).
"""

import argparse
import copy
import functools
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "diaf_reference")

sys.path.insert(0, HERE)
# The PATN fixtures' weight seeding (N(0, 1/fan_in) convs, BN scales/statistics), one place.
from make_patn_reference import _seed_weights  # noqa: E402

COMMIT = "94ea8f0b6c2e9d6380a29055eaa5b0068e894a25"
H, W, B = 32, 16, 3


def _shims():
  if not hasattr(np, "int"):
    np.int = int  # noqa: NPY001
  if not hasattr(F, "upsample"):
    F.upsample = F.interpolate
  grid_sample = F.grid_sample
  F.grid_sample = functools.partial(grid_sample, align_corners=True)
  tv = types.ModuleType("torchvision")
  tv.models = types.SimpleNamespace()
  sys.modules.setdefault("torchvision", tv)
  sk = types.ModuleType("skimage")
  skm = types.ModuleType("skimage.measure")
  skm.compare_ssim = skm.compare_psnr = None
  sk.measure = skm
  sys.modules.setdefault("skimage", sk)
  sys.modules.setdefault("skimage.measure", skm)


def _import(repo):
  sys.path.insert(0, os.path.join(repo, "models"))
  spec = importlib.util.spec_from_file_location("intrinsic_flow_networks", os.path.join(repo, "models", "networks.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  # Python 2 allowed ``None <= 0`` (ResidualBlock's "no side input" test); pass 0 instead.
  init = module.ResidualBlock.__init__
  module.ResidualBlock.__init__ = lambda self, dim, dim_a, *a, **k: init(self, dim, 0 if dim_a is None else dim_a, *a, **k)
  return module


def _disks(rng, b, h, w, radius=2.0):
  """Binary disks (hpt_jax.flow.keypoints_to_disks' rule: distance ≤ radius), [b, h, w, 18]."""
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  out = np.zeros((b, h, w, 18), np.float32)
  for i in range(b):
    for k in range(18):
      if rng.random() < 0.85:
        y, x = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        out[i, ..., k] = ((yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2)
  return out


to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))
to_n = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)


def _both_modes(net, fn):
  """``fn(net)`` in eval mode and in train mode (no grad; a copy, so the state stays put)."""
  out = {}
  with torch.no_grad():
    net.eval()
    out["running"] = fn(net)
    train_net = copy.deepcopy(net).train()
    out["reference"] = fn(train_net)
  return out


def make(repo: str) -> None:
  _shims()
  networks = _import(repo)
  warp = networks.warp_acc_flow
  os.makedirs(OUT, exist_ok=True)
  rng = np.random.default_rng(0)
  arrays = {}
  img = rng.uniform(-1, 1, (B, H, W, 3)).astype(np.float32)
  src_pose, tgt_pose = _disks(rng, B, H, W), _disks(rng, B, H, W)
  gen_flow = rng.normal(0, 3, (B, H, W, 2)).astype(np.float32)
  gen_vis = rng.integers(0, 3, (B, H, W)).astype(np.float32)
  pw_generated = np.tanh(rng.normal(0, 1, (B, H, W, 3))).astype(np.float32)
  pw_warped = rng.uniform(-1, 1, (B, H, W, 3)).astype(np.float32)
  arrays.update(source_image=img, source_pose=src_pose, target_pose=tgt_pose, gen_flow=gen_flow,
                gen_vis=gen_vis.astype(np.int32), pw_generated=pw_generated, pw_warped=pw_warped)

  relu = nn.ReLU(False)
  flow_net = networks.FlowUnet(36, nf=4, start_scale=2, num_scale=3, norm="batch", max_nf=16)
  gen = networks.DualUnetGenerator(18, 3, 3, nf=4, max_nf=8, num_scales=3, num_warp_scales=2, n_residual_blocks=2,
                                   norm="batch", vis_mode="residual", activation=relu)
  pw = networks.UnetGenerator_MultiOutput(9, [1], nf=4, max_nf=8, num_scales=3, n_residual_blocks=2, norm="batch",
                                          activation=relu)
  nets = {"flow": flow_net, "generator": gen, "pixel_warp": pw}
  for seed, (name, net) in enumerate(nets.items()):
    _seed_weights(net, seed)
    torch.save(net.state_dict(), os.path.join(OUT, f"{name}.pth"), _use_new_zipfile_serialization=False)

  def run_flow(net):
    flow, vis, pyr, _ = net(torch.cat([to_t(src_pose), to_t(tgt_pose)], 1))
    return {"flow": to_n(flow) * 20.0, "vis_logits": to_n(vis), **{f"pyramid_{s}": to_n(p) for s, p in enumerate(pyr)}}

  def run_gen(net):
    return {"image": to_n(torch.tanh(net(to_t(tgt_pose), to_t(img), to_t(gen_flow), to_t(gen_vis[..., None]))))}

  def run_pw(net):
    x = torch.cat([to_t(pw_generated), to_t(pw_warped), to_t(gen_vis[..., None]), to_t(gen_flow)], 1)
    logits = net(x)[0]
    return {"logits": to_n(logits), "mask": to_n(torch.sigmoid(logits))}

  for name, fn in (("flow", run_flow), ("generator", run_gen), ("pixel_warp", run_pw)):
    for mode, outs in _both_modes(nets[name], fn).items():
      arrays.update({f"{name}/{mode}/{k}": v for k, v in outs.items()})

  # End-to-end, as models/pose_transfer_model.py forward(): flow module in eval mode, G and PW in train mode.
  with torch.no_grad():
    flow_net.eval()
    flow_out, vis_out, _, _ = flow_net(torch.cat([to_t(src_pose), to_t(tgt_pose)], 1))
    vis = vis_out.argmax(dim=1, keepdim=True).float()
    mask = (vis < 2).float()
    flow = flow_out * 20.0 * mask
    warped = warp(to_t(img), flow, mask=mask)
    g = copy.deepcopy(gen).train()
    generated = torch.tanh(g(to_t(tgt_pose), to_t(img), flow, vis))
    p = copy.deepcopy(pw).train()
    z = torch.sigmoid(p(torch.cat([generated, warped, vis, flow], 1))[0])
    final = warped * z + generated * (1 - z)
  arrays.update({"chain/flow": to_n(flow), "chain/vis": vis[:, 0].numpy().astype(np.int32), "chain/warped": to_n(warped),
                 "chain/generated": to_n(generated), "chain/mask": to_n(z), "chain/final": to_n(final)})
  meta = {
      "repository": "https://github.com/ly015/intrinsic_flow", "commit": COMMIT,
      "files": ["models/networks.py", "models/modules.py", "models/pose_transfer_model.py (forward, chain)"],
      "torch_version": torch.__version__, "image_size": [H, W], "batch": B,
      "flow": {"class": "FlowUnet", "nf": 4, "num_scale": 3, "max_nf": 16},
      "generator": {"class": "DualUnetGenerator", "nf": 4, "max_nf": 8, "num_scales": 3, "num_warp_scales": 2,
                    "vis_mode": "residual", "shared_downsample": True},
      "pixel_warp": {"class": "UnetGenerator_MultiOutput", "nf": 4, "max_nf": 8, "num_scales": 3},
      "shims": ["np.int", "F.upsample", "F.grid_sample(align_corners=True)", "torchvision stub", "skimage stub",
                "ResidualBlock dim_a None -> 0"],
      "script": "tests/data/make_diaf_reference.py",
  }
  np.savez_compressed(os.path.join(OUT, "reference_io.npz"), meta=np.array(json.dumps(meta)), **arrays)
  print(json.dumps(meta, indent=1))
  for k, v in arrays.items():
    print(k, v.shape, float(np.abs(v).mean()))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repo", required=True, help="checkout of ly015/intrinsic_flow @ 94ea8f0")
  make(parser.parse_args().repo)

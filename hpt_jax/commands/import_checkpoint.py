r"""Import the authors' PyTorch weights into the inference-only layout (``hpt-import-checkpoint``).

::

  python launch/import_checkpoint.py --family=patn --config=deepfashion_patn \
      --torch_checkpoint=fashion_PATN/latest_net_netG.pth --workdir=runs/patn_deepfashion
  python launch/evaluate.py --workdir=runs/patn_deepfashion
  python launch/transfer.py --workdir=runs/patn_deepfashion --source=photo.jpg --target=pose.json --output=out.png

Reads the file without torch (:mod:`hpt_jax.torch_checkpoint`: the legacy pre-1.6 ``torch.save``
format of PATN's 2019 release, or the zip format), maps every tensor by name onto the family's
Flax network (:func:`hpt_jax.models.patn.convert_state_dict`: OIHW → HWIO, transposed convs
flipped, batch-norm statistics to ``batch_stats``, PyTorch 0.3's stored InstanceNorm running
statistics dropped), and writes ``DIR/inference.json`` + ``DIR/variables/``
(:func:`hpt_jax.inference.export`) and ``DIR/config.json``, so ``launch/evaluate.py`` and
``launch/transfer.py`` use ``DIR`` unchanged.

The network's shape fields are read from the file and set on the config (``model.ngf``,
``model.n_downsampling``, ``model.n_blocks``, ``model.norm``, ``model.upsampling``); each change
from the given config is printed. What the file cannot tell — the heatmap encoding
(``pose.encoding``), the activation, the image size — comes from ``--config``
(``deepfashion_patn``: one-pixel maps, 256×176; ``market1501_patn``: σ=6 Gaussians, 128×64).

DIAF (Li et al., CVPR 2019; ly015/intrinsic_flow @ 94ea8f0, whose ``scripts/download_models.sh``
fetches ``FlowReg_*`` and ``PoseTransfer_*`` folders of ``<epoch>_net_<netF|netG|netPW>.pth``)::

  python launch/import_checkpoint.py --family=diaf --config=deepfashion_diaf \
      --torch_checkpoint=FlowReg_0.1/best_net_netF.pth,PoseTransfer_0.5/best_net_netG.pth,PoseTransfer_0.5/best_net_netPW.pth \
      --workdir=runs/diaf_authors

takes the flow module's file and, optionally, the generator's and the pixel-warp net's (each file
is recognised by its keys, in any order; the pose-transfer folders do not hold the flow module:
their ``train_opt.json`` names it, ``pretrained_flow_id``). The widths and levels are read from the
files (``flow_model.{nf,max_nf,n_levels}``, ``model.{nf,max_nf,n_scales,n_warp_scales,
n_res_blocks,share_downsample}``, ``pixel_warp_model.{nf,max_nf,n_scales}``) and ``model.bn_mode``
is set to ``'reference'`` (batch statistics at test time, as the authors evaluated). Supported: the
reference's ``FlowUnet`` (``--which_model unet``) and ``DualUnetGenerator`` with ``vis_mode=
'residual'`` (``PoseTransfer_0.4``/``0.5``, ``m0.4``/``m0.5``); ``FlowUnet_v2``, the single-encoder
``UnetGenerator`` (``*0.1``) and the other ``vis_mode`` ablations are refused with the reason.

Flags:
  --family            ``patn`` (PATN's generator, or RATE-Net's ``PATNetwork_v2`` pose branch with
                      ``--config.model.upsampling=bilinear``; the file decides) or ``diaf``.
  --torch_checkpoint  the ``.pth`` file (a state dict); ``diaf``: comma-separated files (above).
  --config            the family's config, ``deepfashion_patn``, ``market1501_patn``,
                      ``deepfashion_diaf`` or ``market1501_diaf`` (``[:preset]`` and overrides as
                      usual).
  --workdir           the folder to write.

Errors (one line, exit 1): a missing or unreadable file, a pickled global outside the allow-list,
or a state dict that does not fit (every unmatched key, missing parameter and shape mismatch is
listed).
"""

from __future__ import annotations

import os
import re

import numpy as np
from absl import flags
from ml_collections import config_flags

from hpt_jax import cli, errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The family's config (deepfashion_patn, market1501_patn, deepfashion_diaf, market1501_diaf).",
    lock_config=False)
_FAMILY = flags.DEFINE_enum("family", None, ["patn", "diaf"], "Family of the weights.")
_TORCH_CHECKPOINT = flags.DEFINE_list("torch_checkpoint", None, "PyTorch state dict (.pth), zip or legacy format; "
                                      "diaf: comma-separated netF[,netG[,netPW]] files.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder to write (inference.json, variables/, config.json).")


def infer_patn_fields(tensors) -> dict:
  """The network fields a PATN / ``PATNetwork_v2`` state dict fixes (see the module docstring).

  Args:
    tensors: ``{torch key: array}``.

  Returns:
    ``{'ngf', 'n_downsampling', 'n_blocks', 'norm', 'upsampling'}`` as far as the keys tell
    (fields it cannot tell are left out; :func:`hpt_jax.models.patn.convert_state_dict` then
    checks every tensor).
  """
  keys = {re.sub(r"^(module\.)?(model\.)?", "", k): v for k, v in tensors.items()}
  out = {}
  w = keys.get("stream1_down.1.weight")
  if w is not None and w.ndim == 4:
    out["ngf"] = int(w.shape[0])
  down = [int(m.group(1)) for k in keys if (m := re.match(r"stream1_down\.(\d+)\.weight$", k)) and keys[k].ndim == 4]
  if down:
    out["n_downsampling"] = len(down) - 1
  blocks = {int(m.group(1)) for k in keys if (m := re.match(r"att\.(\d+)\.", k))}
  if blocks:
    out["n_blocks"] = max(blocks) + 1
  out["norm"] = "batch" if "stream1_down.2.weight" in keys else "instance"
  up = sorted(int(m.group(1)) for k in keys if (m := re.match(r"stream1_up\.(\d+)\.weight$", k)) and keys[k].ndim == 4)
  if len(up) >= 2:
    # PATN: ConvTranspose at 0, 3, …; PATNetwork_v2: Upsample, pad, conv at 2, 7, …
    out["upsampling"] = "transposed" if up[0] == 0 else "bilinear"
  return out


def import_patn(config, torch_checkpoint: str, workdir: str, *, log=print) -> dict:
  """Imports a PATN generator state dict into ``workdir`` (module docstring).

  Args:
    config: a ``patn`` config (``hpt_jax/configs/deepfashion_patn.py`` or ``market1501_patn.py``);
      its ``model`` fields are updated from the file.
    torch_checkpoint: the ``.pth`` path.
    workdir: output folder.
    log: called with one line per message.

  Returns:
    ``{'workdir', 'changed': {field: (given, from file)}, 'dropped': {torch key: reason},
    'tensors': n}``.

  Raises:
    hpt_jax.errors.ConfigError: the config is not a ``patn`` config.
    hpt_jax.errors.MissingFileError, hpt_jax.torch_checkpoint.CheckpointFormatError,
    hpt_jax.torch_checkpoint.UnsafeCheckpointError: the file.
    hpt_jax.models.patn.WeightMismatchError: the state dict does not fit (lists every key).
  """
  from hpt_jax import inference, runs
  from hpt_jax import torch_checkpoint as reader
  from hpt_jax.models import patn

  if config.get("model_name") != "patn":
    raise errors.ConfigError(f"--family=patn needs a patn config (config.model_name={config.get('model_name')!r}); "
                             "use --config=deepfashion_patn or --config=market1501_patn")
  torch_checkpoint_path = os.path.abspath(torch_checkpoint)
  tensors = reader.read_tensors(torch_checkpoint_path)
  changed = {}
  with config.unlocked():
    for field, value in infer_patn_fields(tensors).items():
      given = config.model.get(field)
      if given != value:
        changed[f"model.{field}"] = (given, value)
        config.model[field] = value
  for field, (given, value) in sorted(changed.items()):
    log(f"{field}: {given!r} -> {value!r} (read from the checkpoint)")
  variables, dropped = patn.convert_state_dict(tensors, config.model, tuple(config.data.image_size))
  if dropped:
    reasons = sorted(set(dropped.values()))
    log(f"dropped {len(dropped)} tensor(s): " + "; ".join(
        f"{sum(1 for r in dropped.values() if r == reason)} × {reason}" for reason in reasons))
  source = {"torch_checkpoint": torch_checkpoint_path, "format": reader.checkpoint_format(torch_checkpoint_path),
            "tensors": len(tensors), "dropped": sorted(dropped), "importer": "hpt_jax.commands.import_checkpoint"}
  model = inference.PATNModel(config, {"pose_branch": variables}, source=source)
  os.makedirs(workdir, exist_ok=True)
  inference.export(model, workdir, source=source)
  if os.path.isfile(os.path.join(workdir, "config.json")):
    os.remove(os.path.join(workdir, "config.json"))        # a re-import replaces the record
  runs.write_config_json(workdir, config)
  log(f"imported {len(tensors) - len(dropped)} tensors of {torch_checkpoint_path} into {workdir} "
      f"(inference.json, variables/, config.json)")
  return {"workdir": workdir, "changed": changed, "dropped": dropped, "tensors": len(tensors)}


def identify_diaf_network(tensors) -> str:
  """Which DIAF network a reference state dict holds: ``'flow'``, ``'generator'`` or ``'pixel_warp'``.

  Raises:
    hpt_jax.errors.ConfigError: a network of the reference this port does not have (``FlowUnet_v2``,
      the single-encoder ``UnetGenerator``) or no DIAF network at all.
  """
  keys = {k[len("module."):] if k.startswith("module.") else k for k in tensors}
  if "unet_block.down.0.weight" in keys:
    return "flow"
  if "encp_pre_conv.0.weight" in keys:
    return "generator"
  if "dec_output_0.3.weight" in keys:
    return "pixel_warp"
  if "pred_vis.1.weight" in keys:
    raise errors.ConfigError("this is the reference's FlowUnet_v2 (--which_model unet_v2), which hpt-jax does not "
                             "implement; the FlowUnet (--which_model unet) flow module is supported")
  if "pre_conv.0.weight" in keys and "dec_output.1.weight" in keys:
    raise errors.ConfigError("this is the reference's single-encoder UnetGenerator (PoseTransfer_*0.1, 'w/o dual "
                             "encoder'), which hpt-jax does not implement")
  raise errors.ConfigError("not a DIAF state dict (no FlowUnet, DualUnetGenerator or UnetGenerator_MultiOutput keys)")


def infer_diaf_fields(network: str, tensors) -> dict:
  """The config fields a reference DIAF state dict fixes (module docstring), ``{'block.field': value}``.

  Raises:
    hpt_jax.errors.ConfigError: a generator with another ``vis_mode`` than ``'residual'`` or with
      ``no_end_norm``.
  """
  keys = {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}

  def count(pattern):
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})

  def channels(pattern):
    return [int(v.shape[0]) for k, v in keys.items() if re.match(pattern, k) and v.ndim == 4]

  if network == "flow":
    n = 0
    while f"unet_block.{'submodule.' * n}up.1.weight" in keys:
      n += 1
    return {"flow_model.nf": int(keys["conv_downsample.0.weight"].shape[0]), "flow_model.n_levels": n,
            "flow_model.max_nf": max(channels(r"unet_block\.(submodule\.)*down\.\d\.weight$"))}
  if network == "generator":
    if "enca_0_vis_0.conv.0.weight" in keys and "enca_0_vis_0.conv_a.0.weight" not in keys:
      raise errors.ConfigError("generator with vis_mode 'res_no_vis' (an ablation): only vis_mode='residual' is supported")
    if "enca_0_vis_0.conv.0.weight" not in keys:
      raise errors.ConfigError("generator without visibility residual blocks (vis_mode 'none'/'hard_gate'/'soft_gate', "
                               "an ablation): only vis_mode='residual' is supported")
    if "encp_pre_conv.1.weight" not in keys:
      raise errors.ConfigError("generator built with --G_no_end_norm 1: not supported")
    n = count(r"dec_(\d+)_upsample\.1\.weight$")
    share = all(np.array_equal(keys[f"encp_{l}_downsample.{i}.{p}"], keys[f"enca_{l}_downsample.{i}.{p}"])
                for l in range(n) for i, p in ((1, "weight"), (2, "weight"), (2, "bias"))
                if f"enca_{l}_downsample.{i}.{p}" in keys and f"encp_{l}_downsample.{i}.{p}" in keys)
    return {"model.nf": int(keys["encp_pre_conv.0.weight"].shape[0]), "model.n_scales": n,
            "model.n_warp_scales": count(r"enca_(\d+)_vis_0\.conv\.0\.weight$"),
            "model.n_res_blocks": count(r"encp_0_res_(\d+)\.conv\.0\.weight$"),
            "model.max_nf": max(channels(r"encp_\d+_downsample\.1\.weight$")), "model.share_downsample": share}
  return {"pixel_warp_model.nf": int(keys["pre_conv.0.weight"].shape[0]),
          "pixel_warp_model.n_scales": count(r"dec_(\d+)_upsample\.1\.weight$"),
          "pixel_warp_model.max_nf": max(channels(r"enc_\d+_downsample\.1\.weight$"))}


def import_diaf(config, torch_checkpoints, workdir: str, *, log=print) -> dict:
  """Imports the reference DIAF state dicts (flow module, optionally generator and pixel-warp net)
  into ``workdir`` (module docstring).

  Args:
    config: a ``diaf`` config (``hpt_jax/configs/deepfashion_diaf.py`` or ``market1501_diaf.py``);
      its network fields are updated from the files, ``model.bn_mode`` set to ``'reference'``.
    torch_checkpoints: ``.pth`` paths (any order).
    workdir: output folder.
    log: called with one line per message.

  Returns:
    ``{'workdir', 'networks': (…), 'changed': {field: (given, set)}, 'dropped': {network: {key: reason}}}``.

  Raises:
    hpt_jax.errors.ConfigError: not a ``diaf`` config; two files of one network; no flow module; a
      pixel-warp net without the generator; an unsupported reference network (:func:`identify_diaf_network`).
    hpt_jax.errors.MissingFileError, hpt_jax.torch_checkpoint.CheckpointFormatError,
    hpt_jax.torch_checkpoint.UnsafeCheckpointError: a file.
    hpt_jax.models.patn.WeightMismatchError: a state dict does not fit (lists every key).
  """
  from hpt_jax import inference, runs
  from hpt_jax import torch_checkpoint as reader
  from hpt_jax.input_pipeline import diaf_pipeline
  from hpt_jax.models import diaf

  if config.get("model_name") != "diaf":
    raise errors.ConfigError(f"--family=diaf needs a diaf config (config.model_name={config.get('model_name')!r}); "
                             "use --config=deepfashion_diaf or --config=market1501_diaf")
  if isinstance(torch_checkpoints, str):
    torch_checkpoints = [torch_checkpoints]
  files, tensors = {}, {}
  for path in torch_checkpoints:
    path = os.path.abspath(path)
    t = reader.read_tensors(path)
    network = identify_diaf_network(t)
    if network in files:
      raise errors.ConfigError(f"--torch_checkpoint: {files[network]} and {path} both hold the DIAF {network} network")
    files[network], tensors[network] = path, t
  if "flow" not in files:
    raise errors.ConfigError("--torch_checkpoint: DIAF needs the flow module's file (FlowReg_*/<epoch>_net_netF.pth; "
                             "a PoseTransfer_* folder names it in train_opt.json, pretrained_flow_id)")
  if "pixel_warp" in files and "generator" not in files:
    raise errors.ConfigError("--torch_checkpoint: the pixel-warp net (netPW) needs the generator's file (netG) too")
  changed = {}
  wanted = {"model.bn_mode": "reference"}
  for network in diaf.REFERENCE_FILES:
    if network in tensors:
      wanted.update(infer_diaf_fields(network, tensors[network]))
  with config.unlocked():
    for field, value in wanted.items():
      block, name = field.split(".")
      given = config[block].get(name)
      if given != value:
        changed[field] = (given, value)
        config[block][name] = value
  for field, (given, value) in sorted(changed.items()):
    log(f"{field}: {given!r} -> {value!r} ({'reference test-time batch norm' if field == 'model.bn_mode' else 'read from the checkpoint'})")
  diaf_pipeline.validate_config(config)
  models = diaf.build_models(config)
  size = tuple(config.data.image_size)
  variables, dropped = {}, {}
  for network in diaf.REFERENCE_FILES:
    if network in tensors:
      variables[network], dropped[network] = diaf.convert_state_dict(tensors[network], network, models, size)
  source = {"torch_checkpoint": {n: files[n] for n in variables},
            "format": {n: reader.checkpoint_format(files[n]) for n in variables},
            "dropped": {n: sorted(d) for n, d in dropped.items()}, "importer": "hpt_jax.commands.import_checkpoint"}
  model = inference.DIAFModel(config, variables, source=source)
  os.makedirs(workdir, exist_ok=True)
  inference.export(model, workdir, source=source)
  if os.path.isfile(os.path.join(workdir, "config.json")):
    os.remove(os.path.join(workdir, "config.json"))        # a re-import replaces the record
  runs.write_config_json(workdir, config)
  log(f"imported DIAF {', '.join(variables)} from {', '.join(files[n] for n in variables)} into {workdir} "
      f"(inference.json, variables/, config.json)")
  return {"workdir": workdir, "networks": tuple(variables), "changed": changed, "dropped": dropped}


def main(argv):
  del argv  # cli.run rejects extra arguments
  from hpt_jax import runs
  runs.quiet_library_logs()
  if _FAMILY.value == "diaf":
    import_diaf(_CONFIG.value, _TORCH_CHECKPOINT.value, _WORKDIR.value)
    return
  if len(_TORCH_CHECKPOINT.value) != 1:
    raise errors.ConfigError("--family=patn takes one --torch_checkpoint file")
  import_patn(_CONFIG.value, _TORCH_CHECKPOINT.value[0], _WORKDIR.value)


def run() -> None:
  """Console script ``hpt-import-checkpoint`` (and ``python launch/import_checkpoint.py``)."""
  cli.run(main, config_flag=_CONFIG, required=("family", "torch_checkpoint", "config", "workdir"), doc=__doc__)

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

Flags:
  --family            ``patn`` (PATN's generator, or RATE-Net's ``PATNetwork_v2`` pose branch with
                      ``--config.model.upsampling=bilinear``; the file decides).
  --torch_checkpoint  the ``.pth`` file (a state dict).
  --config            the family's config, ``deepfashion_patn`` or ``market1501_patn`` (``[:preset]``
                      and overrides as usual).
  --workdir           the folder to write.

Errors (one line, exit 1): a missing or unreadable file, a pickled global outside the allow-list,
or a state dict that does not fit (every unmatched key, missing parameter and shape mismatch is
listed).
"""

from __future__ import annotations

import os
import re

from absl import flags
from ml_collections import config_flags

from hpt_jax import cli, errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "The family's config (deepfashion_patn, market1501_patn).",
                                          lock_config=False)
_FAMILY = flags.DEFINE_enum("family", None, ["patn"], "Family of the weights.")
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "PyTorch state dict (.pth), zip or legacy format.")
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


def main(argv):
  del argv  # cli.run rejects extra arguments
  from hpt_jax import runs
  runs.quiet_library_logs()
  import_patn(_CONFIG.value, _TORCH_CHECKPOINT.value, _WORKDIR.value)


def run() -> None:
  """Console script ``hpt-import-checkpoint`` (and ``python launch/import_checkpoint.py``)."""
  cli.run(main, config_flag=_CONFIG, required=("family", "torch_checkpoint", "config", "workdir"), doc=__doc__)

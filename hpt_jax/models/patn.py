"""PATN as a model family of its own (the pose branch alone), and the mapping of the authors'
PyTorch weights onto it.

Paper: Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation", CVPR 2019,
arXiv:1904.03349. Reference code: tengteng95/Pose-Transfer @ 281ee2d (``models/model_variants.py``
``PATNetwork``/``PATNModel``, ``models/networks.py`` ``define_G``), whose released generators
(``latest_net_netG.pth``, DeepFashion and Market-1501) this module reads; and the RATE-Net pose
branch ``PATNetwork_v2`` (Lotayou/Pose-Transfer @ 164c91b, branch ``rate_net``,
``models/model_variants_v2.py``), which has the same parameter names.

The network is :class:`hpt_jax.models.drn.PoseTransferBranch` (DRN's G_P *is* PATN's network)
built from ``config.model`` by :func:`hpt_jax.models.drn.pose_branch`; the PATN family's output is
its image (the reference ``PATNModel.forward`` returns only that).

**Weight mapping** (:func:`convert_state_dict`). State-dict names are those of ``PATNetwork``
(``model.`` + ``PATNModel``'s), with an optional DataParallel ``module.`` prefix:

======================================================  ===========================================
PyTorch                                                 Flax (``pose_branch``)
======================================================  ===========================================
``model.stream{1,2}_down.1``                            ``{image,pose}_stream/conv_in/conv``
``model.stream{1,2}_down.2`` (norm)                     ``{image,pose}_stream/norm_in``
``model.stream{1,2}_down.{4+3i}`` / ``{5+3i}``          ``…/down_<i>/conv`` / ``…/down_<i>_norm``
``model.att.<j>.conv_block_stream1.{1,2,5+d,6+d}``      ``pat_block_<j>/img_conv1/conv, img_norm1, img_conv2/conv, img_norm2``
``model.att.<j>.conv_block_stream2.{1,2,5+d}``          ``pat_block_<j>/pose_conv1/conv, pose_norm1, pose_conv2/conv``
``model.stream1_up.{3i,3i+1}`` (transposed, PATN)       ``up_<i>`` (ConvTranspose), ``up_<i>_norm``
``model.stream1_up.{5i+2,5i+3}`` (bilinear, RATE-Net)   ``up_<i>/conv``, ``up_<i>_norm``
``model.stream1_up.{3n+1 or 5n+1}``                     ``conv_out/conv``
======================================================  ===========================================

``d`` = 1 when the PAT blocks hold a ``Dropout`` (``use_dropout``, both released models) else 0;
the layout is detected from the keys. Tensor rules: conv ``weight`` [O, I, kh, kw] → ``kernel``
[kh, kw, I, O]; transposed conv ``weight`` [I, O, kh, kw] → [kh, kw, I, O] flipped in both spatial
axes (a forward conv of the 2-dilated input, padding (1, 2)); ``bias`` copied; batch norm
``weight``/``bias`` → ``scale``/``bias`` (params), ``running_mean``/``running_var`` →
``mean``/``var`` (``batch_stats``). Dropped, and reported: the ``running_mean``/``running_var``
that PyTorch 0.3 stored for every ``InstanceNorm2d(affine=False)`` (PATN's README says to remove
them; they are unused by instance norm in eval mode since PyTorch 0.4) and ``num_batches_tracked``.
Anything else — an unmatched key, a missing parameter, a shape mismatch — raises
:class:`WeightMismatchError`, which lists every one.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpt_jax import errors
from hpt_jax.models import drn

Dtype = Any


class WeightMismatchError(errors.UserError, ValueError):
  """A PyTorch state dict does not fit the config's network; the message lists the unmatched keys,
  the missing parameters and the shape mismatches (and which config fields fix the network)."""


def build_model(model_config, dtype: Dtype = jnp.float32) -> drn.PoseTransferBranch:
  """PATN's generator from ``config.model`` (:func:`hpt_jax.models.drn.pose_branch`)."""
  return drn.pose_branch(model_config, dtype)


def init_inputs(image_shape: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Zero (image [1, H, W, 3], pose [1, H, W, 18], pose) float32 inputs that initialise the network."""
  h, w = image_shape
  return jnp.zeros((1, h, w, 3)), jnp.zeros((1, h, w, 18)), jnp.zeros((1, h, w, 18))


def abstract_variables(model_config, image_shape: tuple[int, int]) -> dict:
  """``{'params': …, 'batch_stats'?: …}`` shape tree of the network for ``image_shape`` (H, W).

  Raises:
    hpt_jax.errors.ConfigError: H or W not divisible by ``2**model.n_downsampling``.
  """
  n = int(model_config.n_downsampling)
  h, w = image_shape
  if h % 2 ** n or w % 2 ** n:
    raise errors.ConfigError(f"data.image_size={tuple(image_shape)} must be divisible by 2**model.n_downsampling="
                             f"{2 ** n}")
  model = build_model(model_config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(image_shape)))
  return flax.core.unfreeze(shapes) if isinstance(shapes, flax.core.FrozenDict) else dict(shapes)


def generate(model: nn.Module, variables: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Deterministic PATN inference.

  Args:
    model: :func:`build_model`'s network.
    variables: ``{'params': …, 'batch_stats'?: …}`` of the pose branch.
    batch: ``source_image`` float [B, H, W, 3] in [-1, 1]; ``source_pose``, ``target_pose`` float
      [B, H, W, 18] heatmaps (``config.pose.encoding``).

  Returns:
    ``{'image': [B, H, W, 3] float32 in [-1, 1]}``.
  """
  _, image = model.apply(dict(variables), batch["source_image"], batch["source_pose"], batch["target_pose"], True)
  return {"image": image}


# ----------------------------------------------------------------------------- weight mapping
def _conv(table, torch_key, flax_path, bias):
  table[f"{torch_key}.weight"] = ("params", f"{flax_path}/kernel", "conv")
  if bias:
    table[f"{torch_key}.bias"] = ("params", f"{flax_path}/bias", "copy")


def _norm(table, dropped, torch_key, flax_path, norm):
  if norm == "batch":
    table[f"{torch_key}.weight"] = ("params", f"{flax_path}/scale", "copy")
    table[f"{torch_key}.bias"] = ("params", f"{flax_path}/bias", "copy")
    table[f"{torch_key}.running_mean"] = ("batch_stats", f"{flax_path}/mean", "copy")
    table[f"{torch_key}.running_var"] = ("batch_stats", f"{flax_path}/var", "copy")
    dropped[f"{torch_key}.num_batches_tracked"] = "batch-norm step counter (unused at inference)"
  else:
    for stat in ("running_mean", "running_var"):
      dropped[f"{torch_key}.{stat}"] = "InstanceNorm running statistic stored by PyTorch 0.3 (unused)"


def state_dict_layout(model_config, *, dropout_layers: bool = True) -> tuple[dict, dict]:
  """The name table of the module docstring for ``config.model``.

  Args:
    model_config: ``config.model`` (``n_downsampling``, ``n_blocks``, ``norm``, ``upsampling``).
    dropout_layers: the PAT blocks hold a ``Dropout`` module (shifts the second conv's index).

  Returns:
    ``(table, dropped)``: ``table`` maps each expected PyTorch key (without ``model.``) to
    ``(collection, flax path, rule)`` with rule ``'conv'``, ``'conv_transpose'`` or ``'copy'``;
    ``dropped`` maps keys that may be present and are ignored to the reason.
  """
  m = model_config
  n, norm = int(m.n_downsampling), m.get("norm", "instance")
  upsampling = m.get("upsampling", "bilinear")
  bias = norm == "instance"
  table: dict[str, tuple[str, str, str]] = {}
  dropped: dict[str, str] = {}
  for torch_stream, flax_stream in (("stream1_down", "image_stream"), ("stream2_down", "pose_stream")):
    _conv(table, f"{torch_stream}.1", f"{flax_stream}/conv_in/conv", bias)
    _norm(table, dropped, f"{torch_stream}.2", f"{flax_stream}/norm_in", norm)
    for i in range(n):
      _conv(table, f"{torch_stream}.{4 + 3 * i}", f"{flax_stream}/down_{i}/conv", bias)
      _norm(table, dropped, f"{torch_stream}.{5 + 3 * i}", f"{flax_stream}/down_{i}_norm", norm)
  d = 1 if dropout_layers else 0
  for j in range(int(m.n_blocks)):
    s1, s2, blk = f"att.{j}.conv_block_stream1", f"att.{j}.conv_block_stream2", f"pat_block_{j}"
    _conv(table, f"{s1}.1", f"{blk}/img_conv1/conv", bias)
    _norm(table, dropped, f"{s1}.2", f"{blk}/img_norm1", norm)
    _conv(table, f"{s1}.{5 + d}", f"{blk}/img_conv2/conv", bias)
    _norm(table, dropped, f"{s1}.{6 + d}", f"{blk}/img_norm2", norm)
    _conv(table, f"{s2}.1", f"{blk}/pose_conv1/conv", bias)
    _norm(table, dropped, f"{s2}.2", f"{blk}/pose_norm1", norm)
    _conv(table, f"{s2}.{5 + d}", f"{blk}/pose_conv2/conv", bias)
  step = 3 if upsampling == "transposed" else 5
  for i in range(n):
    if upsampling == "transposed":
      table[f"stream1_up.{3 * i}.weight"] = ("params", f"up_{i}/kernel", "conv_transpose")
      if bias:
        table[f"stream1_up.{3 * i}.bias"] = ("params", f"up_{i}/bias", "copy")
      _norm(table, dropped, f"stream1_up.{3 * i + 1}", f"up_{i}_norm", norm)
    else:
      _conv(table, f"stream1_up.{5 * i + 2}", f"up_{i}/conv", bias)
      _norm(table, dropped, f"stream1_up.{5 * i + 3}", f"up_{i}_norm", norm)
  _conv(table, f"stream1_up.{step * n + 1}", "conv_out/conv", True)
  return table, dropped


def _strip_prefix(key: str) -> str:
  for prefix in ("module.", "model.", "module."):
    if key.startswith(prefix):
      key = key[len(prefix):]
  return key


def _transform(rule: str, a: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if rule == "conv":
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0)) if a.ndim == 4 else a
  if rule == "conv_transpose":
    return np.ascontiguousarray(a.transpose(2, 3, 0, 1)[::-1, ::-1]) if a.ndim == 4 else a
  return a


def _config_hint(model_config) -> str:
  m = model_config
  return (f"model.n_downsampling={m.n_downsampling}, model.n_blocks={m.n_blocks}, model.ngf={m.ngf}, "
          f"model.norm={m.get('norm', 'instance')!r}, model.upsampling={m.get('upsampling', 'bilinear')!r}")


def convert_state_dict(tensors: Mapping[str, np.ndarray], model_config,
                       image_shape: tuple[int, int]) -> tuple[dict, dict[str, str]]:
  """Maps a PATN / ``PATNetwork_v2`` generator state dict onto :class:`~hpt_jax.models.drn.PoseTransferBranch`.

  Args:
    tensors: ``{torch key: array}`` (:func:`hpt_jax.torch_checkpoint.read_tensors`).
    model_config: ``config.model`` of the network to fill (its shapes are checked).
    image_shape: (H, W) the network is initialised for (any size divisible by 2**n works later).

  Returns:
    ``(variables, dropped)``: ``{'params': …, 'batch_stats'?: …}`` nested dicts of float32 NumPy
    arrays, and ``{torch key: reason}`` of the tensors deliberately ignored.

  Raises:
    WeightMismatchError: keys that match nothing, parameters the file lacks, or shapes that
      differ (all listed, with the config fields that fix the network).
  """
  expected = flax.traverse_util.flatten_dict(abstract_variables(model_config, image_shape), sep="/")
  keys = {_strip_prefix(k): k for k in tensors}
  best = None
  for dropout_layers in (True, False):
    table, dropped = state_dict_layout(model_config, dropout_layers=dropout_layers)
    score = len(set(keys) & set(table))
    if best is None or score > best[0]:
      best = (score, table, dropped)
  _, table, dropped = best

  return map_state_dict(tensors, keys, table, dropped, expected,
                        f"the network ({_config_hint(model_config)})")


def map_state_dict(tensors: Mapping[str, np.ndarray], keys: Mapping[str, str], table: Mapping[str, tuple],
                   dropped: Mapping[str, str], expected: Mapping[str, Any], what: str,
                   shared_hint: str = "a shared weight") -> tuple[dict, dict[str, str]]:
  """Fills a Flax variable tree from a PyTorch state dict through a layout table (every importer).

  Args:
    tensors: ``{torch key: array}`` as read from the file.
    keys: ``{normalised key (prefixes stripped): torch key}``.
    table: ``{normalised key: (collection, flat Flax path, rule)}``; ``rule`` is ``'conv'``,
      ``'conv_transpose'`` (OIHW / IOHW → HWIO, the transposed kernel flipped) or ``'copy'``.
      Several keys may name one path (weights the reference shares): their tensors must be equal.
    dropped: ``{normalised key: reason}`` of tensors deliberately ignored.
    expected: ``{'collection/path': abstract array}`` of the network (its shapes are checked).
    what: the network, for the error message.
    shared_hint: what to say when two tensors for one shared path differ.

  Returns:
    ``(variables, ignored)``: nested dicts of float32 NumPy arrays, ``{torch key: reason}``.

  Raises:
    WeightMismatchError: keys that match nothing, shapes that differ, two tensors for one shared
      path that differ, or network parameters the file lacks — all listed in one message.
  """
  flat: dict[str, np.ndarray] = {}
  unmatched, bad, ignored = [], [], {}
  for key in sorted(keys):
    original = keys[key]
    if key in table:
      collection, path, rule = table[key]
      target = f"{collection}/{path}"
      value = _transform(rule, tensors[original])
      want = expected.get(target)
      if want is None:
        unmatched.append(f"{original} (no {target} in the network)")
      elif tuple(want.shape) != value.shape:
        bad.append(f"{original} {tuple(np.shape(tensors[original]))} -> {target}: "
                   f"got {value.shape}, network has {tuple(want.shape)}")
      elif target in flat and not np.array_equal(flat[target], value):
        bad.append(f"{original} differs from the tensor already mapped to {target} ({shared_hint})")
      else:
        flat[target] = value
    elif key in dropped:
      ignored[original] = dropped[key]
    else:
      unmatched.append(original)
  in_file = {f"{table[k][0]}/{table[k][1]}" for k in keys if k in table}
  missing = sorted(set(expected) - set(flat) - in_file)
  if unmatched or bad or missing:
    parts = []
    if unmatched:
      parts.append(f"{len(unmatched)} unmatched key(s): {', '.join(unmatched)}")
    if bad:
      parts.append(f"{len(bad)} shape/value mismatch(es): {'; '.join(bad)}")
    if missing:
      parts.append(f"{len(missing)} network parameter(s) missing from the file: {', '.join(missing)}")
    raise WeightMismatchError(f"PyTorch state dict does not fit {what}: " + " | ".join(parts))
  variables = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  return variables, ignored

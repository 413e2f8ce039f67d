"""DRN modules, losses, schedule and the 1-1-3 cycle (tiny widths; CPU)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpt_jax.configs import deepfashion_drn
from hpt_jax import errors, layers, losses, weights
from hpt_jax.models import drn
from hpt_jax.train import drn as drn_train
from hpt_jax.train import optim
from tests._helpers import init_like_training, step_like_training


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _random_batch(h, w, b=2, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "source_image": rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
      "target_image": rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
      "source_pose": rng.uniform(0, 1, (b, h, w, 18)).astype(np.float32),
      "target_pose": rng.uniform(0, 1, (b, h, w, 18)).astype(np.float32),
  }


@functools.lru_cache(maxsize=None)
def _vgg16():
  return weights.load_vgg_params("vgg16")


def test_parameter_counts_match_reference_at_ngf64():
  """G_P 165.2 M, G_T 17.7 M in use, each D ≈ 4 M: the counts of the PyTorch modules of the reference
  code (Lotayou/Pose-Transfer @ 164c91b, branch rate_net)."""
  config = deepfashion_drn.get_config()
  models = drn.build_models(config.model)
  h, w = 256, 176
  img, pose = jnp.zeros((1, h, w, 3)), jnp.zeros((1, h, w, 18))
  key = jax.random.PRNGKey(0)
  g_p = jax.eval_shape(lambda: models["pose_branch"].init(key, img, pose, pose))
  g_t = jax.eval_shape(lambda: models["detail"].init(key, img, jnp.zeros((1, 32, 22, 512))))
  d_a = jax.eval_shape(lambda: models["disc_appearance"].init(key, img, img))
  d_s = jax.eval_shape(lambda: models["disc_shape"].init(key, img, pose))
  assert round(_count(g_p) / 1e6, 1) == 165.2
  assert round(_count(g_t) / 1e6, 1) == 17.7
  # D: conv7 (C_in+3)→64, 64→128, 128→256, 3 residual blocks of two 256→256 convs, all with bias.
  for d, c_in in ((d_a, 3), (d_s, 18)):
    expected = (49 * (3 + c_in) * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 256 + 256) + 6 * (9 * 256 * 256 + 256)
    assert _count(d) == expected
    assert 3.9e6 < expected < 4.0e6


def test_output_shapes_tiny():
  config = deepfashion_drn.get_config("tiny")
  models = drn.build_models(config.model)
  h, w = config.data.image_size
  b = _random_batch(h, w)
  key = jax.random.PRNGKey(0)

  @jax.jit
  def run(b):
    v = models["pose_branch"].init(key, b["source_image"], b["source_pose"], b["target_pose"])
    guidance, coarse = models["pose_branch"].apply(v, b["source_image"], b["source_pose"], b["target_pose"])
    vt = models["detail"].init(key, b["source_image"], guidance)
    residual = models["detail"].apply(vt, b["source_image"], guidance)
    vd = models["disc_shape"].init(key, coarse, b["target_pose"])
    return guidance, coarse, residual, models["disc_shape"].apply(vd, coarse, b["target_pose"])

  guidance, coarse, residual, scores = run(b)
  n = config.model.n_downsampling
  assert guidance.shape == (2, h // 2 ** n, w // 2 ** n, config.model.ngf * 2 ** n)
  assert coarse.shape == (2, h, w, 3) and coarse.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(coarse))) <= 1.0
  assert residual.shape == (2, h, w, 3)
  m = config.model
  assert scores.shape == (2, h // 2 ** m.d_downsampling, w // 2 ** m.d_downsampling, m.ndf * 2 ** m.d_downsampling)


def test_instance_norm_and_adain_hand_values():
  x = jnp.array([1.0, 2.0, 3.0, 6.0]).reshape(1, 2, 2, 1)  # mean 3, biased var 3.5
  expected = (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5 + 1e-5)
  np.testing.assert_allclose(np.asarray(layers.instance_norm(x)).ravel(), expected, rtol=1e-6)
  out = layers.adain(x, gamma=jnp.array([[2.0]]), beta=jnp.array([[0.5]]))
  np.testing.assert_allclose(np.asarray(out).ravel(), 2 * expected + 0.5, rtol=1e-6)


def test_reflect_conv_matches_explicit_padding():
  x = jnp.arange(2 * 5 * 4 * 1, dtype=jnp.float32).reshape(2, 5, 4, 1)
  conv = layers.Conv(1, 3, padding=1)
  params = conv.init(jax.random.PRNGKey(0), x)
  k = params["params"]["conv"]["kernel"][:, :, 0, 0]
  b = params["params"]["conv"]["bias"][0]
  out = conv.apply(params, x)
  xp = np.pad(np.asarray(x[0, :, :, 0]), 1, mode="reflect")
  ref = np.array([[np.sum(xp[i:i + 3, j:j + 3] * np.asarray(k)) + b for j in range(4)] for i in range(5)])
  np.testing.assert_allclose(np.asarray(out[0, :, :, 0]), ref, rtol=1e-5, atol=1e-5)


def test_losses_hand_values():
  a = jnp.array([[[[1.0, 2.0]]]])  # [1, 1, 1, 2]
  b = jnp.array([[[[0.0, 4.0]]]])
  assert float(losses.l1(a, b)) == pytest.approx(1.5)
  assert float(losses.perceptual({"x": a}, {"x": b})) == pytest.approx(1.5)
  # Gram of one pixel with features (1, 2): [[1, 2], [2, 4]] / (C·h·w = 2).
  np.testing.assert_allclose(np.asarray(losses.gram_matrix(a))[0], np.array([[1, 2], [2, 4]]) / 2)
  # Gram of b: [[0, 0], [0, 16]] / 2; difference [[0.5, 1], [1, -6]]; mean of squares over 4 entries.
  frobenius = 0.25 + 1 + 1 + 36
  assert float(losses.gram_style({"x": a}, {"x": b})) == pytest.approx(frobenius / 4)   # C² = 4 entries
  assert float(losses.gram_style({"x": a}, {"x": b}, "frobenius")) == pytest.approx(frobenius)
  assert float(losses.gram_style({"x": a}, {"x": b}, "chw")) == pytest.approx(frobenius / 2)  # C·h·w = 2
  with pytest.raises(ValueError, match="style_normalization"):
    losses.gram_style({"x": a}, {"x": b}, "sum")
  assert float(losses.lsgan_generator(jnp.array([0.0, 1.0, 3.0]))) == pytest.approx((1 + 0 + 4) / 3)
  assert float(losses.lsgan_discriminator(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0]))) == pytest.approx(
      0.5 * (0.5 + 2.0))


def test_hold_then_linear_decay():
  lr = optim.hold_then_linear_decay(1e-4, 10, 40)
  np.testing.assert_allclose([float(lr(s)) for s in (0, 9, 10, 25, 40, 50)],
                             [1e-4, 1e-4, 1e-4, 5e-5, 0.0, 0.0], rtol=1e-6, atol=1e-12)
  with pytest.raises(ValueError, match="hold_steps"):
    optim.hold_then_linear_decay(1e-4, 50, 40)


def test_hold_is_a_fraction_of_total_steps():
  # The paper's 10K of 40K cycles; shortening the run keeps the shape (round half to even).
  assert optim.hold_steps(0.25, 40_000) == 10_000
  assert optim.hold_steps(0.25, 12) == 3
  assert optim.hold_steps(0.6, 500) == 300
  assert optim.hold_steps(0.0, 7) == 0 and optim.hold_steps(1.0, 7) == 7
  with pytest.raises(errors.ConfigError, match="optimizer.hold_fraction=1.5"):
    optim.hold_steps(1.5, 40)
  config = deepfashion_drn.get_config("cpu")
  config.total_steps = 12              # what failed before: the preset's hold no longer fits
  lr = drn_train.DRNTrainer(config).lr_fn
  # hold = round(0.6 · 12) = 7 cycles, then linear to 0 over the last 5
  np.testing.assert_allclose([float(lr(s)) for s in (0, 7, 8, 12)], [2e-4, 2e-4, 2e-4 * 0.8, 0.0], rtol=1e-6, atol=1e-12)


def test_image_size_must_divide():
  config = deepfashion_drn.get_config("tiny")
  with pytest.raises(ValueError, match="data.image_size"):
    drn_train.DRNTrainer(config).init_state(jax.random.PRNGKey(0), (30, 24))


def test_one_cycle_updates_every_network_and_is_finite():
  config = deepfashion_drn.get_config("tiny")
  trainer = drn_train.DRNTrainer(config)
  h, w = config.data.image_size
  state = init_like_training(trainer, (h, w))
  before = jax.tree.map(lambda x: np.array(x, copy=True), state.params)   # the step donates `state`
  new_state, metrics = step_like_training(trainer, state, _random_batch(h, w), _vgg16())
  for name, value in metrics.items():
    assert np.isfinite(float(value)), name
  assert int(new_state.step) == 1
  for net in drn_train.NETWORKS:
    moved = [np.any(old != np.asarray(new)) for old, new in
             zip(jax.tree.leaves(before[net]), jax.tree.leaves(new_state.params[net]))]
    assert any(moved), net
  # Every update saw a non-zero gradient. (Single kernels can stay bit-identical after one cycle:
  # RAdam's first ~5 updates are un-normalised momentum SGD, so a 1e-4·|g| step below float32
  # resolution does not move a weight, as in the reference RAdam.)
  for name in ("pose_branch_coarse", "pose_branch", "detail", "disc_appearance", "disc_shape"):
    assert float(metrics[f"grad_norm/{name}"]) > 0, name
  # The discriminators took d_updates=3 steps: their RAdam count says so.
  counts = [x for x in jax.tree.leaves(new_state.opt_state["disc_shape"]) if x.dtype == jnp.int32]
  assert int(counts[0]) == config.d_updates
  counts = [x for x in jax.tree.leaves(new_state.opt_state["pose_branch"]) if x.dtype == jnp.int32]
  assert int(counts[0]) == 2  # pose branch: once on L_1, once on L_2


def test_mixed_precision_losses_close_to_float32():
  """bfloat16 activations with float32 parameters: every loss within 5% (relative) of float32."""
  config = deepfashion_drn.get_config("tiny")
  h, w = config.data.image_size
  batch = _random_batch(h, w, seed=1)
  results = {}
  # The parameters do not depend on the compute dtype: one float32 init serves both runs.
  init = jax.device_get(init_like_training(drn_train.DRNTrainer(config), (h, w)))
  for dtype in ("float32", "bfloat16"):
    config.dtype = dtype
    trainer = drn_train.DRNTrainer(config)
    state = jax.tree.map(jnp.asarray, init)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    _, metrics = step_like_training(trainer, state, batch, _vgg16())
    results[dtype] = {k: float(v) for k, v in metrics.items()}
  for key in ("coarse/l1", "coarse/perceptual", "refined/l1", "refined/perceptual", "refined/style",
              "refined/gan_appearance", "refined/gan_shape", "disc/appearance", "disc/shape"):
    np.testing.assert_allclose(results["bfloat16"][key], results["float32"][key], rtol=0.05, err_msg=key)


def test_remat_gives_the_same_gradients():
  """``model.remat`` rematerialises the PAT blocks: same loss and gradients, less activation memory."""
  config = deepfashion_drn.get_config("tiny")
  h, w = config.data.image_size
  b = _random_batch(h, w)
  key = jax.random.PRNGKey(0)
  grads = []
  for remat in (False, True):
    config.model.remat = remat
    g_p = drn.build_models(config.model)["pose_branch"]
    params = g_p.init(key, b["source_image"], b["source_pose"], b["target_pose"])

    def loss(p, g_p=g_p):
      _, coarse = g_p.apply(p, b["source_image"], b["source_pose"], b["target_pose"], False,
                            rngs={"dropout": key})
      return jnp.mean(jnp.abs(coarse - b["target_image"]))

    grads.append(jax.jit(jax.value_and_grad(loss))(params))
  (l0, g0), (l1, g1) = grads
  np.testing.assert_allclose(float(l0), float(l1), rtol=1e-6)
  for x, y in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-7)

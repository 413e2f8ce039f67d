"""HPN: model growth, pose maps on the bottleneck grid, local losses, the L2→L1 switch, per-level
checkpoints and resume, every level (up to 1024²) at tiny width, and 8 devices == 1 device."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpt_jax.configs import deepfashion_hpn, hpn_1024
from hpt_jax import pose, weights
from hpt_jax.models import hpn as hpn_model
from hpt_jax.train import hpn
from hpt_jax.runs import event_scalars
from tests._helpers import assert_same_tree

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(trainer, batch_size=2, seed=0):
  h, w = trainer.image_size
  rng = np.random.default_rng(seed)
  kp = np.stack([rng.uniform(0, h - 1, (batch_size, 18)), rng.uniform(0, w - 1, (batch_size, 18))], -1)
  kp = kp.astype(np.float32)
  kp[:, 16] = -1                                   # a missing ear: its regions are masked
  batch = {"source_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
           "target_image": rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
           "target_keypoints": kp}
  if trainer.num_local:
    batch["target_boxes"], batch["target_box_valid"] = pose.local_descriptor_boxes(kp, trainer.num_local, (h, w))
  return batch


def _vgg(config):
  return weights.random_vgg_params(config.perceptual.network, jax.random.PRNGKey(1), tuple(config.perceptual.taps))


# ---------------------------------------------------------------------------- model
def test_level_sizes_and_channel_halving():
  assert hpn_model.level_sizes((64, 44), 3) == ((64, 44), (128, 88), (256, 176))
  assert [hpn_model.channels_at(h, 1024, 32) for h in (32, 64, 128, 256, 512, 1024)] == [1024, 512, 256, 128, 64, 32]
  with pytest.raises(ValueError, match="base_size"):
    hpn_model.level_sizes((63, 44), 2)


def test_generator_layers_and_shapes_at_paper_width():
  """The 64×44 level at the paper's width: bottleneck 32×22×1024, block channels halve per doubling."""
  g = hpn_model.HPNGenerator((128, 88), (32, 22), 1024)
  shapes = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 88, 3)),
                                         jnp.zeros((1, 32, 22, 18)), False))
  p = shapes["params"]
  assert sorted(p) == ["dec_128x88", "dec_64x44", "dec_bottleneck", "enc_128x88", "enc_64x44",
                       "enc_bottleneck", "from_rgb_128x88", "to_rgb_128x88"]
  assert p["from_rgb_128x88"]["kernel"].shape == (1, 1, 3, 128)        # → channels_at(256)
  assert p["enc_128x88"]["conv0"]["kernel"].shape == (3, 3, 128, 256)
  assert p["enc_64x44"]["conv1"]["kernel"].shape == (3, 3, 512, 512)
  assert p["enc_bottleneck"]["conv1"]["kernel"].shape == (3, 3, 1024, 1024)
  assert p["dec_bottleneck"]["conv0"]["kernel"].shape == (3, 3, 1024 + 18, 1024)
  assert p["dec_64x44"]["conv0"]["kernel"].shape == (3, 3, 1024 + 512, 512)
  assert p["dec_128x88"]["conv0"]["kernel"].shape == (3, 3, 512 + 256, 256)
  assert p["to_rgb_128x88"]["kernel"].shape == (1, 1, 256, 3)
  out = jax.eval_shape(lambda v: g.apply(v, jnp.zeros((2, 128, 88, 3)), jnp.zeros((2, 32, 22, 18)), False), shapes)
  assert out.shape == (2, 128, 88, 3)


def test_growing_keeps_old_weights_and_adds_new_blocks():
  config = deepfashion_hpn.get_config("tiny")
  t0, t1 = hpn.HPNTrainer(config, 0), hpn.HPNTrainer(config, 1)
  s0 = t0.init_state(jax.random.PRNGKey(0))
  # Perturb the old level so a copied layer cannot equal a fresh init by accident.
  s0 = s0.replace(params=jax.tree.map(lambda x: x + 0.5, s0.params),
                  batch_stats=jax.tree.map(lambda x: x + 0.25, s0.batch_stats))
  s1, carried, added = t1.grow_from(s0, jax.random.PRNGKey(1))
  assert carried == ["dec_16x12", "dec_bottleneck", "enc_16x12", "enc_bottleneck"]
  assert added == ["dec_32x24", "enc_32x24", "from_rgb_32x24", "to_rgb_32x24"]
  g0, g1 = s0.params["generator"], s1.params["generator"]
  for name in carried:
    jax.tree.map(np.testing.assert_array_equal, g0[name], g1[name])
    jax.tree.map(np.testing.assert_array_equal, s0.batch_stats["generator"][name], s1.batch_stats["generator"][name])
  assert "from_rgb_16x12" not in g1 and "to_rgb_16x12" not in g1       # RGB projections replaced
  assert int(s1.step) == 0
  # The grown network runs at the new size.
  out = t1.generate(s1.params, s1.batch_stats, _batch(t1))
  assert out.shape == (2, 32, 24, 3) and np.all(np.abs(np.asarray(out)) <= 1)
  with pytest.raises(ValueError, match="changed shape"):
    hpn_model.grow_params({"enc_a": {"k": np.zeros(2)}}, {"enc_a": {"k": np.zeros(3)}})


def test_pose_maps_on_grid_match_numpy_heatmaps():
  kp = np.array([[[10.0, 7.0]] * 18], np.float32)
  kp[0, 3] = [-1, -1]
  kp[0, 5] = [63.0, 43.0]
  maps = np.asarray(hpn_model.pose_maps_on_grid(jnp.asarray(kp), (64, 44), (32, 22), 1.6))
  grid_kp = pose.resize_keypoints(kp[0], (64, 44), (32, 22))
  expected = pose.keypoints_to_heatmaps(grid_kp, 32, 22, 1.6)
  np.testing.assert_allclose(maps[0], expected, atol=1e-6)
  assert np.all(maps[0, ..., 3] == 0)
  # Same σ in bottleneck cells at every level (the bottleneck input does not change with growth).
  t0, t2 = (hpn.HPNTrainer(deepfashion_hpn.get_config(), i) for i in (0, 2))
  assert t0.sigma_cells == t2.sigma_cells == pytest.approx(1.6)


def test_crop_regions_equal_numpy_slices():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 64, 48, 3)).astype(np.float32)
  kp = np.stack([rng.uniform(0, 63, (2, 18)), rng.uniform(0, 47, (2, 18))], -1)
  boxes, _ = pose.local_descriptor_boxes(kp, 31, (64, 48))
  crops = np.asarray(hpn_model.crop_regions(jnp.asarray(images), jnp.asarray(boxes), 8))
  for b in range(2):
    for n in range(31):
      y0, x0, y1, x1 = boxes[b, n]
      np.testing.assert_array_equal(crops[b, n], images[b, y0:y1, x0:x1])


def test_local_discriminator_reaches_2x2():
  for side, n_convs in ((32, 4), (128, 6), (8, 2)):
    d = hpn_model.LocalDiscriminator(ndf=2)
    crop = jnp.zeros((3, side, side, 3))
    variables = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), crop, crop))
    assert sorted(variables["params"]) == sorted([f"conv{i}" for i in range(n_convs)] + ["logit"])
    out, inter = jax.eval_shape(lambda v: d.apply(v, crop, crop, capture_intermediates=lambda m, _: m.name == "logit"),
                                variables)
    assert inter["intermediates"]["logit"]["__call__"][0].shape == (3, 2, 2, 1)   # Fig. 6's 2×2×1
    assert out.shape == (3,)


# ------------------------------------------------------------------------- losses
def test_criterion_l2_then_l1_values():
  a, b = jnp.array([0.0, 1.0, 3.0]), jnp.array([1.0, 1.0, 1.0])
  assert float(hpn.criterion(a, b, jnp.array(False))) == pytest.approx((1 + 0 + 4) / 3)
  assert float(hpn.criterion(a, b, jnp.array(True))) == pytest.approx((1 + 0 + 2) / 3)


def test_local_perceptual_masks_invalid_regions_and_sums_regions():
  trainer = hpn.HPNTrainer(deepfashion_hpn.get_config("tiny"), 1)     # 18 regions
  b, n = 2, 18
  pred = {"f": jnp.zeros((b * n, 4, 4, 3))}
  target = {"f": jnp.ones((b * n, 4, 4, 3))}
  valid = np.ones((b, n), bool)
  valid[0, :5] = False
  loss = float(trainer._local_perceptual(pred, target, jnp.asarray(valid), jnp.array(True)))
  assert loss == pytest.approx((13 + 18) / 2)        # Eq. 3 sums regions; mean over the batch


def test_criterion_switches_at_half_of_the_level():
  config = deepfashion_hpn.get_config("tiny")
  config.steps_per_level = 10
  trainer = hpn.HPNTrainer(config, 0)
  state = trainer.init_state(jax.random.PRNGKey(0))
  batch = _batch(trainer)
  vgg = _vgg(config)
  step = jax.jit(trainer.train_step)

  @jax.jit
  def by_hand(state, batch):
    """The global term recomputed from the same training-mode forward pass."""
    generated, _ = trainer.generator.apply(
        {"params": state.params["generator"], "batch_stats": state.batch_stats["generator"]},
        batch["source_image"], trainer.pose_maps(batch), True, mutable=["batch_stats"])
    f_gen = trainer._features(vgg, generated)
    f_tgt = trainer._features(vgg, batch["target_image"])
    return (sum(jnp.mean(jnp.square(f_gen[k] - f_tgt[k])) for k in f_gen),
            sum(jnp.mean(jnp.abs(f_gen[k] - f_tgt[k])) for k in f_gen))

  l2, l1 = (float(x) for x in by_hand(state, batch))
  for s, use_l1, expected in ((4, 0.0, l2), (5, 1.0, l1)):
    _, m = step(state.replace(step=jnp.int32(s)), batch, vgg)
    assert float(m["criterion_is_l1"]) == use_l1, s
    assert float(m["loss/global_perceptual"]) == pytest.approx(expected, rel=1e-4), s
    assert float(m["loss/local_perceptual"]) > 0


def test_1024_level_at_tiny_width():
  """hpn_1024.py's 1024² level (44 local descriptors, local discriminator) trains a step on CPU."""
  config = hpn_1024.get_config("tiny")
  trainer = hpn.HPNTrainer(config, 4)
  assert trainer.image_size == (1024, 1024) and trainer.num_local == 44 and trainer.side == 128
  assert trainer.use_local_disc
  state = trainer.init_state(jax.random.PRNGKey(0))
  assert sorted(k for k in state.params["generator"] if k.startswith("enc_")) == [
      "enc_1024x1024", "enc_128x128", "enc_256x256", "enc_512x512", "enc_64x64", "enc_bottleneck"]
  new, m = jax.jit(trainer.train_step)(state, _batch(trainer, batch_size=1), _vgg(config))
  m = jax.device_get(m)
  assert all(np.isfinite(v) for v in m.values()), m
  assert int(new.step) == 1 and float(m["loss/global_perceptual"]) > 0
  # At the final level the local discriminator replaces the local perceptual loss (§3.2).
  assert float(m["loss/local_perceptual"]) == 0.0
  assert float(m["loss/local_gan"]) > 0 and float(m["disc/local"]) > 0
  for k in ("generator", "local_disc"):       # both networks moved
    before, after = jax.tree.leaves(state.params[k]), jax.tree.leaves(new.params[k])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), k
  # The intermediate levels: 18 then 31 local perceptual regions, no discriminator.
  assert [hpn.HPNTrainer(config, i).num_local for i in range(5)] == [18, 18, 31, 31, 44]
  assert not any(hpn.HPNTrainer(config, i).use_local_disc for i in range(4))


# ------------------------------------------------------------- driver: levels, resume
def _run_config(steps=4):
  config = deepfashion_hpn.get_config("tiny")
  config.model.num_levels = 2
  config.local_descriptors = (18, 31)
  config.steps_per_level = steps
  config.checkpoint_every_steps = 1
  config.sample_every_steps = steps
  config.keep_checkpoints = 10
  return config


def test_levels_checkpoints_and_resume(tmp_path):
  config = _run_config()
  straight = str(tmp_path / "straight")
  a = hpn.train_and_evaluate(config, straight)
  ck = os.path.join(straight, "checkpoints")
  assert sorted(os.listdir(ck)) == ["level_16x12", "level_32x24"]
  assert sorted(os.listdir(os.path.join(ck, "level_16x12")), key=int) == ["1", "2", "3", "4"]
  for name in ("level_16x12", "level_32x24"):
    result = json.load(open(os.path.join(straight, "eval", f"{name}.json")))
    assert 0 < result["eval/pairs"] and -1 <= result["eval/local_ssim"] <= 1
    assert os.path.isfile(os.path.join(straight, "samples", f"{name}_step_4.png"))
  assert int(a.step) == 4
  # Same config and seed in another folder: bit-identical parameters and logged scalars (CPU).
  twin = str(tmp_path / "twin")
  t = hpn.train_and_evaluate(config, twin)
  assert_same_tree(a.params, t.params)
  assert_same_tree(a.batch_stats, t.batch_stats)
  scalars = event_scalars(straight)
  assert any(tag.startswith("level_32x24/") for tag in scalars) and scalars == event_scalars(twin)

  # (1) Interrupted inside level 1 after step 2: level 0 is skipped, level 1 resumes at step 2
  # (parameters, optimiser state and the data iterator's position come from the checkpoint).
  resumed = str(tmp_path / "resumed")
  shutil.copytree(straight, resumed)
  for s in ("3", "4"):
    shutil.rmtree(os.path.join(resumed, "checkpoints", "level_32x24", s))
  b = hpn.train_and_evaluate(config, resumed)
  # (2) Level 0 complete, level 1 never started: level 0 is skipped and restored from its folder.
  grown = str(tmp_path / "grown")
  shutil.copytree(straight, grown)
  shutil.rmtree(os.path.join(grown, "checkpoints", "level_32x24"))
  c = hpn.train_and_evaluate(config, grown)
  for other in (b, c):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                 jax.device_get(a.params), jax.device_get(other.params))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                 jax.device_get(a.batch_stats), jax.device_get(other.batch_stats))
  # (3) A finished run reruns as a no-op: no level trains again, the final state comes back.
  d = hpn.train_and_evaluate(config, straight)
  assert sorted(os.listdir(os.path.join(straight, "checkpoints", "level_32x24")), key=int) == ["1", "2", "3", "4"]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params), jax.device_get(d.params))


def test_bad_local_descriptor_config_names_the_field():
  config = deepfashion_hpn.get_config("tiny")
  config.local_descriptors = (18, 31)
  with pytest.raises(ValueError, match="local_descriptors"):
    hpn.HPNTrainer(config, 0)


# ----------------------------------------------------------------- data parallel
_CHILD = textwrap.dedent(r"""
import json, sys
import jax, numpy as np
from hpt_jax.configs import deepfashion_hpn
from hpt_jax import parallel, pose, weights
from hpt_jax.train import hpn
N = int(sys.argv[1])
assert jax.device_count() == N
config = deepfashion_hpn.get_config("tiny")
results = {}
for level in (2,):      # the final tiny level: BatchNorm, the global loss and the local discriminator
  trainer = hpn.HPNTrainer(config, level)
  h, w = trainer.image_size
  rng = np.random.default_rng(level)
  kp = np.stack([rng.uniform(0, h - 1, (8, 18)), rng.uniform(0, w - 1, (8, 18))], -1).astype(np.float32)
  batch = {"source_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32),
           "target_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32), "target_keypoints": kp}
  batch["target_boxes"], batch["target_box_valid"] = pose.local_descriptor_boxes(kp, trainer.num_local, (h, w))
  vgg = weights.random_vgg_params("vgg16", jax.random.PRNGKey(1), tuple(config.perceptual.taps))
  state0 = jax.device_get(trainer.init_state(jax.random.PRNGKey(0)))
  out = {}
  for name, devices in (("one", jax.devices()[:1]), ("all", jax.devices())):
    mesh = parallel.make_mesh(devices)
    rep = parallel.replicated(mesh)
    step = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
    state, metrics = step(jax.device_put(state0, rep), parallel.shard_batch(batch, mesh), jax.device_put(vgg, rep))
    out[name] = jax.device_get((state.params, state.batch_stats, metrics))
  def frac(a, b):
    return [np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)) / (1e-5 + 1e-4 * np.abs(np.asarray(y, np.float64)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  (p1, s1, m1), (p8, s8, m8) = out["one"], out["all"]
  # Losses, gradient norms and the BatchNorm statistics (global over the 8 shards): tight.
  tight = max(float(np.max(f)) for f in frac((s1, m1), (s8, m8)))
  # Parameters after one Adam step: update = lr·g/(|g| + eps) ≈ ±lr, so an element whose gradient
  # is ~0 may take either sign when the 8 partial sums are added in another order. Every element
  # must be within 2·lr, and all but a few within the tight tolerance.
  diffs = [np.abs(np.asarray(x) - np.asarray(y)) for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p8))]
  fr = np.concatenate([f.ravel() for f in frac(p1, p8)])
  results[level] = {"worst_fraction_of_tolerance": tight, "n_leaves": len(jax.tree.leaves(out["one"])),
                    "param_max_abs_over_lr": float(max(d.max() for d in diffs)) / config.optimizer.learning_rate,
                    "param_fraction_loose": float(np.mean(fr > 1.0)), "n_metrics": len(m1)}
print("RESULT" + json.dumps(results))
""")


def test_eight_devices_equal_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _CHILD, "8"], cwd=_REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  [line] = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  for level, r in json.loads(line[len("RESULT"):]).items():
    assert r["n_leaves"] > 20 and r["n_metrics"] >= 8
    assert r["worst_fraction_of_tolerance"] <= 1.0, (level, r)
    assert r["param_max_abs_over_lr"] <= 2.0 + 1e-3, (level, r)
    assert r["param_fraction_loose"] <= 5e-3, (level, r)   # measured: 5e-4

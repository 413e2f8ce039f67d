"""DIAF: warp op, flow targets, pose disks, networks, the three training phases, data parallelism."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpt_jax.configs import deepfashion_diaf
from hpt_jax import flow as flow_lib
from hpt_jax.models import diaf as diaf_models
from hpt_jax.train import diaf as diaf_train
from hpt_jax.input_pipeline import diaf_pipeline, patn_format
from hpt_jax.runs import event_scalars
from tests._helpers import assert_same_tree, saved_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------- warp op
def test_warp_matches_numpy_reference_on_random_flows():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  flow = rng.normal(0, 4, size=(2, 9, 11, 2)).astype(np.float32)   # many samples leave the image
  got = np.asarray(flow_lib.warp(jnp.asarray(x), jnp.asarray(flow)))
  want = flow_lib.warp_numpy(x, flow)
  np.testing.assert_allclose(got, want, atol=2e-5)
  # The reference itself, at one pixel by hand: (y=3, x=4) samples at (3 + dy, 4 + dx).
  b, y, xx = 1, 3, 4
  sx, sy = xx + flow[b, y, xx, 0], y + flow[b, y, xx, 1]
  x0, y0 = int(np.floor(sx)), int(np.floor(sy))
  acc = np.zeros(3)
  for yi, xi in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
    if 0 <= yi < 9 and 0 <= xi < 11:
      acc += (1 - abs(sx - xi)) * (1 - abs(sy - yi)) * x[b, yi, xi]
  np.testing.assert_allclose(want[b, y, xx], acc, atol=1e-6)


def test_warp_gradients_match_finite_differences():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 6, 7, 2)), jnp.float32)
  # Fractional parts in [0.2, 0.8]: the ±eps probes stay in one bilinear cell.
  flow = jnp.asarray(rng.integers(-2, 3, (1, 6, 7, 2)) + rng.uniform(0.2, 0.8, (1, 6, 7, 2)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(1, 6, 7, 2)), jnp.float32)
  loss = jax.jit(lambda x, f: jnp.sum(flow_lib.warp(x, f) * weights))
  gx, gf = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, flow)
  eps = 1e-2
  for _ in range(3):
    d = jnp.asarray(rng.normal(size=flow.shape), jnp.float32)
    numeric = (loss(x, flow + eps * d) - loss(x, flow - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(gf * d)), float(numeric), rtol=2e-3, atol=2e-3)
    dx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    numeric = (loss(x + eps * dx, flow) - loss(x - eps * dx, flow)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(gx * dx)), float(numeric), rtol=2e-3, atol=2e-3)
  # Per-element check of d/dflow at a few entries.
  for idx in ((0, 2, 3, 0), (0, 4, 1, 1), (0, 0, 6, 0)):
    e = jnp.zeros_like(flow).at[idx].set(1.0)
    numeric = (loss(x, flow + eps * e) - loss(x, flow - eps * e)) / (2 * eps)
    np.testing.assert_allclose(float(gf[idx]), float(numeric), rtol=2e-3, atol=2e-3)


def test_identity_flow_returns_input_exactly_and_translations_shift():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 8, 10, 5)).astype(np.float32)
  assert np.array_equal(np.asarray(flow_lib.warp(jnp.asarray(x), jnp.zeros((2, 8, 10, 2)))), x)
  # Integer translation dx = +2, dy = -1: out[y, x] = in[y - 1, x + 2], zeros shifted in.
  flow = np.zeros((2, 8, 10, 2), np.float32)
  flow[..., 0], flow[..., 1] = 2, -1
  out = np.asarray(flow_lib.warp(jnp.asarray(x), jnp.asarray(flow)))
  want = np.zeros_like(x)
  want[:, 1:, :-2] = x[:, :-1, 2:]
  assert np.array_equal(out, want)
  # Half-pixel horizontal translation: the mean of two neighbours.
  flow = np.zeros((2, 8, 10, 2), np.float32)
  flow[..., 0] = 0.5
  out = np.asarray(flow_lib.warp(jnp.asarray(x), jnp.asarray(flow)))
  np.testing.assert_allclose(out[:, :, :-1], 0.5 * (x[:, :, :-1] + x[:, :, 1:]), atol=1e-6)
  np.testing.assert_allclose(out[:, :, -1], 0.5 * x[:, :, -1], atol=1e-6)


def test_downsampled_flow_and_visibility():
  flow = jnp.arange(2 * 4 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 4, 2)
  small = np.asarray(flow_lib.downsample_flow(flow, 2))
  np.testing.assert_allclose(small[0, 0, 0], np.asarray(flow[0, :2, :2].mean((0, 1))) / 2)
  vis = jnp.asarray([[[2, 2, 1, 2], [2, 0, 2, 2], [2, 2, 2, 2], [2, 2, 2, 1]]])
  np.testing.assert_array_equal(np.asarray(flow_lib.downsample_visibility(vis, 2)), [[[0, 1], [2, 1]]])


# ---------------------------------------------------------------------------- pose, targets
def test_binary_disks_against_hand_count():
  kp = np.full((18, 2), -1, np.float32)
  kp[0] = (5, 7)
  kp[3] = (0, 0)           # corner: a quarter disk
  disks = flow_lib.keypoints_to_disks(kp, 12, 14, 2.0)
  assert disks.shape == (12, 14, 18) and set(np.unique(disks)) <= {0.0, 1.0}
  assert disks[..., 0].sum() == 13           # lattice points with dy² + dx² ≤ 4
  assert disks[5, 7, 0] == 1 and disks[5, 9, 0] == 1 and disks[6, 9, 0] == 0
  assert disks[..., 3].sum() == 6            # (0,0),(0,1),(0,2),(1,0),(2,0),(1,1)
  assert disks[..., [1, 2] + list(range(4, 18))].sum() == 0


def _skeleton():
  """A hand-made standing skeleton in a 96×64 frame, (y, x)."""
  kp = np.full((18, 2), -1, np.float32)
  joints = {0: (12, 32), 1: (24, 32), 2: (24, 22), 3: (38, 20), 4: (52, 20), 5: (24, 42), 6: (38, 44),
            7: (52, 44), 8: (52, 26), 9: (68, 26), 10: (84, 26), 11: (52, 38), 12: (68, 38), 13: (84, 38),
            14: (10, 29), 15: (10, 35)}
  for k, v in joints.items():
    kp[k] = v
  return kp


def test_pseudo_flow_of_a_translated_skeleton_is_constant():
  tgt = _skeleton()
  src = tgt.copy()
  present = src[:, 0] >= 0
  src[present] += np.array([3.0, -5.0], np.float32)    # (dy, dx)
  flow, vis = flow_lib.skeleton_pseudo_flow(src, tgt, 96, 64, radius=4.0)
  human = vis < flow_lib.BACKGROUND
  assert 500 < human.sum() < 96 * 64 / 2
  np.testing.assert_allclose(flow[human, 0], -5.0, atol=1e-3)
  np.testing.assert_allclose(flow[human, 1], 3.0, atol=1e-3)
  assert np.all(flow[~human] == 0)
  # Everything whose source point stays inside the frame is visible.
  gy, gx = np.mgrid[:96, :64]
  inside = (gy + 3 <= 95) & (gx - 5 >= 0)
  assert np.all(vis[human & inside] == flow_lib.VISIBLE)
  # The torso quadrilateral is filled, the background far from the body is background.
  assert vis[40, 32] == flow_lib.VISIBLE and vis[90, 2] == flow_lib.BACKGROUND


def test_pseudo_flow_rotated_forearm_and_missing_limb():
  tgt = _skeleton()
  src = tgt.copy()
  src[4] = (38, 6)          # right forearm rotated by 90° about the elbow (38, 20): wrist now to the left
  src[[6, 7]] = -1          # left elbow and wrist missing in the source
  flow, vis = flow_lib.skeleton_pseudo_flow(src, tgt, 96, 64, radius=3.0)
  # A point on the target forearm axis, halfway: (45, 20) → halfway on the source forearm (38, 13).
  np.testing.assert_allclose(flow[45, 20], [13 - 20, 38 - 45], atol=1e-4)
  # Across the bone the offset rotates with it: (45, 22) (2 px right of the axis) → (40, 13).
  np.testing.assert_allclose(flow[45, 22], [13 - 22, 40 - 45], atol=1e-4)
  assert vis[45, 20] == flow_lib.VISIBLE
  # The left forearm has no source bone: invisible.
  assert vis[45, 44] == flow_lib.INVISIBLE


def test_corr_file_round_trip_and_errors(tmp_path):
  h, w = 6, 5
  rng = np.random.default_rng(3)
  gy, gx = np.mgrid[:h, :w].astype(np.float32)
  corr = np.stack([gx + 1.5, gy - 2.0], -1)
  vis = rng.integers(0, 3, (h, w))
  path = tmp_path / "b_a.corr"
  flow_lib.write_corr(path, corr, vis)
  assert os.path.getsize(path) == 8 + h * w * 9
  c2, v2 = flow_lib.read_corr(path)
  np.testing.assert_array_equal(c2, corr)
  np.testing.assert_array_equal(v2, vis)
  flow, v3 = flow_lib.corr_to_flow(c2, v2, median_blur=0)
  human = vis < 2
  np.testing.assert_allclose(flow[human], np.broadcast_to([1.5, -2.0], flow[human].shape))
  assert np.all(flow[~human] == 0)
  np.testing.assert_array_equal(v3, vis)
  with open(path, "rb") as f:
    data = f.read()
  bad = tmp_path / "truncated.corr"
  bad.write_bytes(data[:-3])
  with pytest.raises(ValueError, match="truncated.corr"):
    flow_lib.read_corr(bad)
  with pytest.raises(FileNotFoundError, match="missing.corr"):
    flow_lib.read_corr(tmp_path / "missing.corr")


def test_endpoint_error_and_multiscale_loss_by_hand():
  target = np.zeros((1, 4, 4, 2), np.float32)
  target[..., 0] = 3.0
  pred = np.zeros_like(target)
  pred[..., 1] = 4.0
  vis = np.full((1, 4, 4), 2, np.int32)
  vis[0, :2, :2] = 0
  assert float(flow_lib.endpoint_error(pred, target, vis)[0]) == pytest.approx(5.0)
  # The loss is 0 when every level predicts the pooled target / 20.
  pyramid = [jnp.full((1, 2, 2, 2), 0.0).at[..., 0].set(3.0 / 20), jnp.full((1, 1, 1, 2), 0.0).at[..., 0].set(3.0 / 20)]
  assert float(diaf_train.multiscale_flow_loss(pyramid, target, vis, (0.32, 0.16))) < 1e-5
  # An error of 20 px (1 unit) on level 0's only human cell: 0.32 · 1.
  pyramid[0] = pyramid[0].at[0, 0, 0, 1].set(1.0)
  assert float(diaf_train.multiscale_flow_loss(pyramid, target, vis, (0.32, 0.16))) == pytest.approx(0.32, abs=1e-4)


# ----------------------------------------------------------------------------- networks
def test_network_shapes_and_building_blocks():
  config = deepfashion_diaf.get_config("")     # paper size, shapes only (no compilation)
  models = diaf_models.build_models(config)
  b, h, w = 1, 256, 256
  img = jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)
  pose = jax.ShapeDtypeStruct((b, h, w, 18), jnp.float32)
  fl = jax.ShapeDtypeStruct((b, h, w, 2), jnp.float32)
  vis = jax.ShapeDtypeStruct((b, h, w), jnp.int32)
  key = jax.random.PRNGKey(0)

  def shapes(name, *args):
    variables = jax.eval_shape(lambda *a: models[name].init(key, *a, train=False), *args)
    out = jax.eval_shape(lambda v, *a: models[name].apply(v, *a, train=False), variables, *args)
    return out, variables

  out, _ = shapes("flow", pose, pose)
  assert out["flow"].shape == (b, h, w, 2) and out["vis_logits"].shape == (b, h, w, 3)
  assert [p.shape[1] for p in out["flow_pyramid"]] == [128, 64, 32, 16, 8]
  out, variables = shapes("generator", img, pose, fl, vis)
  assert out.shape == (b, h, w, 3)
  names = set(variables["params"])
  assert {"warp_4_0", "warp_4_1"} <= names and "warp_5_0" not in names      # 5 warped scales of 7
  assert "dec_6_up" in names and "encp_6_down" in names
  out, _ = shapes("pixel_warp", img, img, fl, vis)
  assert out.shape == (b, h, w, 1)
  out, _ = shapes("disc", img, pose, img)
  assert out.shape == (b, 30, 30, 1)                                          # 70×70 PatchGAN at 256²
  assert diaf_models.patch_receptive_field(3) == 70
  # Pixel shuffle: PyTorch channel order c·r² + i·r + j.
  x = jnp.arange(2 * 3 * 8, dtype=jnp.float32).reshape(1, 2, 3, 8)
  y = np.asarray(diaf_models.pixel_shuffle(x, 2))
  assert y.shape == (1, 4, 6, 2)
  for c in range(2):
    for i in range(2):
      for j in range(2):
        np.testing.assert_array_equal(y[0, i::2, j::2, c], np.asarray(x[0, :, :, c * 4 + i * 2 + j]))
  with pytest.raises(ValueError, match="n_scales"):
    small = [jax.ShapeDtypeStruct((1, 192, 192) + s.shape[3:], s.dtype) for s in (img, pose, fl, vis)]
    jax.eval_shape(lambda *a: models["generator"].init(key, *a, train=False), *small)


# ------------------------------------------------------------------------------ pipeline
def test_pipeline_pads_to_256_framing_on_the_real_sample():
  config = deepfashion_diaf.get_config("tiny")
  config.eval_data.image_size = (256, 256)
  examples = diaf_pipeline.load_examples(config.eval_data)
  ds = diaf_pipeline.create_diaf_dataset(examples[:2], config, config.eval_data, batch_size=2, seed=0,
                                         train=False)
  batch = next(iter(ds))
  assert batch["source_image"].shape == (2, 256, 256, 3) and batch["flow"].shape == (2, 256, 256, 2)
  assert batch["visibility"].dtype == np.int32 and batch["source_pose"].shape == (2, 256, 256, 18)
  # 40 white columns on each side; the keypoints shifted by +40.
  assert np.all(batch["source_image"][:, :, :40] == 1.0) and np.all(batch["source_image"][:, :, 216:] == 1.0)
  kp = examples[0].source_keypoints
  present = kp[:, 0] >= 0
  np.testing.assert_allclose(batch["source_keypoints"][0][present], kp[present] + np.array([0, 40.0]))
  stored = patn_format.decode_image(examples[0].source_path)
  np.testing.assert_allclose(batch["source_image"][0, :, 40:216], stored, atol=1e-6)
  # The pseudo-ground-truth of the batch is the generator's output on those keypoints.
  flow, vis = flow_lib.skeleton_pseudo_flow(batch["source_keypoints"][0], batch["target_keypoints"][0], 256, 256,
                                            config.flow_targets.limb_radius)
  np.testing.assert_array_equal(batch["visibility"][0], vis)


def test_pipeline_reads_corr_targets_resized_and_flipped(tmp_path):
  config = deepfashion_diaf.get_config("tiny")      # 64×64 from the 256×256 frame: flows × 1/4
  config.flow_targets.source = "corr"
  config.flow_targets.corr_dir = str(tmp_path)
  config.flow_targets.median_blur = 0
  examples = diaf_pipeline.load_examples(config.eval_data)[:2]
  gy, gx = np.mgrid[:256, :256].astype(np.float32)
  vis = np.full((256, 256), 2)
  vis[64:192, 96:160] = 0                           # a human block, visible
  vis[64:128, 96:128] = 1                           # its top-left quarter invisible
  for ex in examples:
    flow_lib.write_corr(diaf_pipeline.corr_path(str(tmp_path), config.flow_targets.corr_name_format, ex),
                        np.stack([gx + 8.0, gy - 4.0], -1), vis)
  diaf_pipeline.validate_config(config)
  batch = next(iter(diaf_pipeline.create_diaf_dataset(examples, config, config.eval_data, batch_size=2, seed=0,
                                                      train=False)))
  human = batch["visibility"][0] < 2
  assert human.sum() == 32 * 16 and (batch["visibility"][0] == 1).sum() == 16 * 8
  np.testing.assert_allclose(batch["flow"][0][human], np.broadcast_to([2.0, -1.0], (human.sum(), 2)))
  assert np.all(batch["flow"][0][~human] == 0)
  # Flipped pairs mirror the target grid and negate dx.
  loader = diaf_pipeline._DiafLoader(examples, diaf_pipeline._view(config, config.eval_data))
  flipped = loader.load(0, flip=True)
  np.testing.assert_array_equal(flipped["visibility"], batch["visibility"][0][:, ::-1])
  np.testing.assert_allclose(flipped["flow"][flipped["visibility"] < 2], np.broadcast_to([-2.0, -1.0], (human.sum(), 2)))
  # A pair without its file names the missing file.
  config.flow_targets.corr_name_format = "{source}_{target}.corr"
  with pytest.raises(patn_format.DataError, match=r"\.corr"):
    diaf_pipeline._DiafLoader(examples, diaf_pipeline._view(config, config.eval_data)).load(0, flip=False)


def test_config_validation_names_the_field():
  config = deepfashion_diaf.get_config("tiny")
  config.data.image_size = (64, 62)
  with pytest.raises(ValueError, match=r"data.image_size=\(64, 62\) must be divisible by 4 \(set by model.n_scales\)"):
    diaf_pipeline.validate_config(config)
  config = deepfashion_diaf.get_config("tiny")
  config.flow_targets.source = "corr"
  with pytest.raises(ValueError, match="flow_targets.corr_dir"):
    diaf_pipeline.validate_config(config)


# ------------------------------------------------------------------------- training phases
def _tiny(**steps):
  config = deepfashion_diaf.get_config("tiny")
  for phase, n in steps.items():
    config.phases[phase].total_steps = n
  config.sample_every_steps = 100
  config.batch_size = 4            # 11 evaluation batches of the 44 eval pairs
  return config


def test_all_phases_run_on_the_real_sample_then_resume(tmp_path):
  workdir = str(tmp_path / "run")
  summary = diaf_train.train_and_evaluate(_tiny(flow=2, generator=2, pixel_warp=1), workdir)
  for phase in diaf_train.PHASES:
    assert os.listdir(os.path.join(workdir, "checkpoints", phase)), phase
  with open(os.path.join(workdir, "flow_eval.json")) as f:
    flow_eval = json.load(f)
  assert flow_eval["pairs"] == 44 and flow_eval["epe_zero_flow"] > 0 and np.isfinite(flow_eval["epe"])
  stages = summary["stages"]
  for phase in ("generator", "pixel_warp"):
    assert np.isfinite(stages[phase]["final_metrics"][f"{phase}/total"])
  assert stages["generator"]["final_metrics"]["generator/gan_on"] == 1.0     # gan_start_step = 1 in tiny
  assert 0 < stages["pixel_warp"]["final_metrics"]["pixel_warp/mask_mean"] < 1
  assert [stages[p]["end_step"] for p in diaf_train.PHASES] == [2, 2, 1]
  assert stages["pixel_warp"]["checkpoint"] == os.path.join(workdir, "checkpoints", "pixel_warp", "1")
  assert os.path.exists(os.path.join(workdir, "samples", "pixel_warp_step_1.png"))
  # Same config and seed in another folder: every phase's parameters, metrics and logged scalars
  # are bit-identical (CPU).
  twin = str(tmp_path / "twin")
  twin_summary = diaf_train.train_and_evaluate(_tiny(flow=2, generator=2, pixel_warp=1), twin)
  for phase in diaf_train.PHASES:
    assert twin_summary["stages"][phase]["final_metrics"] == stages[phase]["final_metrics"], phase
    step = stages[phase]["end_step"]
    assert_same_tree(saved_state(workdir, phase, step), saved_state(twin, phase, step))
  assert twin_summary["eval"] == summary["eval"]
  scalars = event_scalars(workdir)
  assert any(tag.startswith("pixel_warp/") for tag in scalars) and scalars == event_scalars(twin)
  # A rerun with a longer last phase skips the finished phases and resumes inside the last one.
  flow_ckpt = sorted(os.listdir(os.path.join(workdir, "checkpoints", "flow")))
  summary = diaf_train.train_and_evaluate(_tiny(flow=2, generator=2, pixel_warp=2), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "flow"))) == flow_ckpt
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "pixel_warp"))) == ["1", "2"]
  assert summary["eval"]["flow"] == flow_eval
  assert summary["stages"]["pixel_warp"]["start_step"] == 1 and summary["stages"]["pixel_warp"]["end_step"] == 2
  assert summary["stages"]["flow"]["end_step"] == 2        # kept from the first run


# ---------------------------------------------------------------------- data parallelism
# One generator-phase step (frozen flow module, batch-norm generator and discriminator, the D
# update and the GAN term on) on a mesh of 8 simulated CPU devices vs. 1 device, same state and
# global batch of 8. It runs in a fresh interpreter because XLA_FLAGS must be set before JAX starts
# (as tests/test_parallel.py). Batch statistics are global over the sharded batch, so everything
# agrees (rtol 1e-4, atol 1e-5; gradients through Adam's first moments), except that parameters
# whose gradient is below the gradients' tolerance (|g| < 2e-5, float32 summation noise or a true 0)
# can take Adam's first step (≈ ±lr·sign(g)) in either direction: counted, must stay ≤ 0.1 %.
_CHILD = textwrap.dedent(r"""
import json, sys
import jax
import numpy as np
from hpt_jax.configs import deepfashion_diaf
from hpt_jax import parallel, weights
from hpt_jax.train import diaf

N = int(sys.argv[1])
assert jax.device_count() == N
config = deepfashion_diaf.get_config("tiny")
config.batch_size = 8
config.phases.generator.gan_start_step = 0      # exercise the discriminator and the GAN term
h, w = config.data.image_size
trainer = diaf.DIAFTrainer(config)
vgg_host = weights.random_vgg_params("vgg16", jax.random.PRNGKey(1), tuple(config.perceptual.taps))
rng = np.random.default_rng(0)
batch_host = {
    "source_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32),
    "target_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32),
    "source_pose": (rng.uniform(0, 1, (8, h, w, 18)) > 0.9).astype(np.float32),
    "target_pose": (rng.uniform(0, 1, (8, h, w, 18)) > 0.9).astype(np.float32),
    "flow": rng.normal(0, 3, (8, h, w, 2)).astype(np.float32),
    "visibility": rng.integers(0, 3, (8, h, w)).astype(np.int32),
}
flow_host = trainer.init_state(jax.random.PRNGKey(0), "flow", (h, w))
gen_host = trainer.init_state(jax.random.PRNGKey(1), "generator", (h, w))


def run(devices):
  mesh = parallel.make_mesh(devices)
  rep = parallel.replicated(mesh)
  batch = parallel.shard_batch(batch_host, mesh)
  frozen = jax.device_put(diaf._variables(flow_host), rep)
  gen_step = jax.jit(trainer.generator_step, donate_argnums=0, out_shardings=(rep, rep))
  gs, gm = gen_step(jax.device_put(gen_host, rep), batch, frozen, jax.device_put(vgg_host, rep))
  assert len(batch["source_image"].addressable_shards) == len(mesh.devices.ravel())
  return jax.device_get((gs, gm))


a = run(None)
b = run(jax.devices()[:1])


def adam_mu(opt_state):
  # The Adam first moment (1 - b1)*g of the first step, wherever it sits in the optax chain.
  for s in opt_state if isinstance(opt_state, tuple) and not hasattr(opt_state, "mu") else [opt_state]:
    if hasattr(s, "mu"):
      return s.mu
    if isinstance(s, tuple):
      found = adam_mu(s)
      if found is not None:
        return found
  return None


report = {"compared": 0, "mismatch": [], "worst": 0.0, "noise_level_updates": 0, "params": 0}


def compare(tag, x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  report["compared"] += 1
  if x.size:
    report["worst"] = max(report["worst"], float(np.max(np.abs(x - y) / (1e-5 + 1e-4 * np.abs(y)))))
  if not np.allclose(x, y, rtol=1e-4, atol=1e-5):
    report["mismatch"].append(tag)


for k, (sa, sb) in enumerate(((a[0], b[0]),)):
  compare(f"[{k}].step", sa.step, sb.step)
  for tree in ("batch_stats", "opt_state"):
    fa, fb = (jax.tree_util.tree_flatten_with_path(getattr(s, tree))[0] for s in (sa, sb))
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
      compare(f"[{k}].{tree}{jax.tree_util.keystr(path)}", x, y)
  # Parameters after one Adam step: lr·m̂/(√v̂ + ε) ≈ lr·sign(g), so an entry whose gradient is
  # within the tolerance the gradients are compared with (Adam's first moment g/2 at atol 1e-5,
  # i.e. |g| < 2e-5: float32 summation noise, measured up to ~5e-6, or a true 0 such as a batch-norm
  # offset followed by another batch norm) may move by ±lr in either run. Those entries are
  # counted, every other entry must agree.
  for name in sa.params:
    mu = adam_mu(sb.opt_state[name])
    for (path, x), (_, y), (_, m) in zip(*(jax.tree_util.tree_flatten_with_path(t)[0]
                                          for t in (sa.params[name], sb.params[name], mu))):
      x, y, g = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(m, np.float64) / 0.5
      noise = np.abs(g) < 2e-5
      report["params"] += x.size
      report["noise_level_updates"] += int(np.sum(noise & ~np.isclose(x, y, rtol=1e-4, atol=1e-5)))
      compare(f"[{k}].params.{name}{jax.tree_util.keystr(path)}", np.where(noise, y, x), y)
for metrics_a, metrics_b in ((a[1], b[1]),):
  assert set(metrics_a) == set(metrics_b)
  for key in sorted(metrics_a):
    compare("metrics/" + key, metrics_a[key], metrics_b[key])
report["bn_stats_moved"] = any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a[0].batch_stats["generator"]),
                                                                      jax.tree.leaves(gen_host.batch_stats["generator"])))
report["gan_on"] = float(a[1]["gan_on"])
print("RESULT " + json.dumps(report))
""")


def test_eight_device_steps_equal_one_device_steps():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _CHILD, "8"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, f"child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  report = json.loads(line[-1][len("RESULT "):])
  assert not report["mismatch"], report
  assert report["compared"] > 150 and report["bn_stats_moved"] and report["gan_on"] == 1.0, report
  assert report["noise_level_updates"] <= 1e-3 * report["params"], report

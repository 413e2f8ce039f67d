"""Evaluation end to end on a tiny checkpoint: files, table, baselines, errors, cheap_metrics."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import deepfashion_drn
from hpt_jax import image_io
from hpt_jax import evaluation, pose
from hpt_jax.metrics import lpips as lpips_lib
from hpt_jax.metrics import pose_estimator
from hpt_jax.metrics import ssim as ssim_lib
from hpt_jax.train import drn as drn_train
from input_pipeline import patn_format, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PAIRS = 6


def _tiny():
  config = deepfashion_drn.get_config("tiny")
  config.total_steps = 2
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 100
  return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("eval") / "run")
  drn_train.train_and_evaluate(_tiny(), workdir)
  return workdir


@pytest.fixture(scope="module")
def evaluated(tiny_run):
  # batch 4 over 6 pairs: the last batch is padded and its padding dropped.
  result = evaluation.evaluate(_tiny(), tiny_run, max_pairs=N_PAIRS, batch_size=4, panels=True)
  return tiny_run, result


def test_evaluate_writes_images_panels_and_table(evaluated):
  workdir, result = evaluated
  out = os.path.join(workdir, "eval", "drn_2")
  assert result["output_dir"] == os.path.abspath(out)
  with open(os.path.join(out, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["num_pairs"] == N_PAIRS and metrics["checkpoint"]["step"] == 2
  assert metrics["scored_resolution"] == [256, 176] and metrics["model_resolution"] == [32, 24]
  assert set(metrics["rows"]) == set(evaluation.ROWS)
  for row in evaluation.ROWS:
    assert set(metrics["rows"][row]) == set(evaluation.COLUMNS), row
    for col, value in metrics["rows"][row].items():
      # every cell is a number or has a note saying why not
      assert value is not None or f"{row}/{col}" in metrics["notes"], (row, col)
  for row in evaluation.ROWS[:3]:
    r = metrics["rows"][row]
    for col in ("ssim_patn", "ssim_plain", "ms_ssim", "local_ssim"):
      assert -1.0 <= r[col] <= 1.0, (row, col)
    assert r["lpips_vgg"] >= 0 and r["lpips_alex"] >= 0
  gt = metrics["rows"]["ground truth"]
  assert gt["ssim_plain"] is None and "trivially 1" in metrics["notes"]["ground truth/ssim_plain"]
  assert metrics["fid"]["comparable"] is False and metrics["fid"]["n_images"] == N_PAIRS
  # FID is a number when the Inception weights are fetched (CI), else n/a with the reason.
  fid_cell = metrics["rows"]["model (refined)"]["fid"]
  assert (fid_cell is not None and fid_cell >= 0) or (
      metrics["notes"]["model (refined)/fid"].startswith("n/a"))
  assert metrics["notes"]["model (refined)/is"].startswith("n/a")

  names = sorted(os.listdir(os.path.join(out, "images")))
  expected = sorted(evaluation.pair_name(e) + ".png"
                    for e in pipeline.load_examples(_tiny().eval_data)[:N_PAIRS])
  assert names == expected
  assert all("___" in n for n in names)
  assert Image.open(os.path.join(out, "images", names[0])).size == (176, 256)
  assert sorted(os.listdir(os.path.join(out, "panels"))) == expected
  assert Image.open(os.path.join(out, "panels", names[0])).size == (5 * 176, 256)
  with open(os.path.join(out, "metrics.md")) as f:
    md = f.read()
  for row in evaluation.ROWS:
    assert f"| {row} |" in md
  for header in evaluation.COLUMNS.values():
    assert header in md
  with open(os.path.join(out, "per_pair.csv")) as f:
    assert len(f.read().strip().splitlines()) == N_PAIRS + 1


def _in_fours(fn, *arrays):
  """fn over 6 pairs as two calls of 4 (pairs 0-3 and 2-5): the batch shape evaluate() compiled."""
  first = np.asarray(fn(*(a[:4] for a in arrays)))
  second = np.asarray(fn(*(a[2:6] for a in arrays)))
  return np.concatenate([first, second[2:]])


def test_source_copied_row_matches_metric_functions(evaluated):
  _, result = evaluated
  examples = pipeline.load_examples(_tiny().eval_data)[:N_PAIRS]
  src = np.stack([image_io.to_uint8(patn_format.decode_image(e.source_path)) for e in examples])
  tgt = np.stack([image_io.to_uint8(patn_format.decode_image(e.target_path)) for e in examples])
  row = result["rows"]["source copied"]
  for key, fn in (("ssim_plain", ssim_lib.ssim_plain), ("ssim_patn", ssim_lib.ssim_patn),
                  ("ms_ssim", lambda a, b: ssim_lib.ms_ssim(a, b, 255.0))):
    np.testing.assert_allclose(row[key], float(np.mean(_in_fours(fn, src, tgt))), rtol=1e-5, err_msg=key)
  # local-SSIM (HPN §4.2): SSIM map averaged in the 44 local-descriptor boxes of the target pose.
  boxes, valid = pose.local_descriptor_boxes(np.stack([e.target_keypoints for e in examples]), 44, (256, 176))
  assert valid.sum(axis=1).min() >= 18
  local = _in_fours(lambda a, b, bx: ssim_lib.local_ssim(a, b, bx, 255.0), src, tgt, boxes)
  np.testing.assert_allclose(row["local_ssim"], float(np.mean(local)), rtol=1e-5)
  assert row["local_ssim"] != pytest.approx(row["ssim_plain"], abs=1e-3)   # a different number
  lp = _in_fours(lambda a, b: lpips_lib.lpips_distance(a / 127.5 - 1.0, b / 127.5 - 1.0, "vgg"), src, tgt)
  np.testing.assert_allclose(row["lpips_vgg"], float(np.mean(lp)), rtol=1e-4)


def test_pckh_rows(evaluated):
  _, result = evaluated
  model = os.path.join(pose_estimator.default_model_dir(), pose_estimator.LANDMARK_MODEL)
  if not os.path.isfile(model):
    assert "fetch_models.py" in result["notes"]["model (refined)/pckh"]
    return
  for row in evaluation.ROWS:
    assert 0.0 <= result["rows"][row]["pckh"] <= 1.0
    curve = result["keypoint_error_curve"][row]
    assert len(curve) == len(evaluation.KEC_THRESHOLDS) and curve == sorted(curve)
  assert result["rows"]["ground truth"]["pckh"] > 0.85      # the estimator's ceiling on real targets


def test_missing_checkpoint_names_the_folder(tmp_path):
  workdir = str(tmp_path / "never_trained")
  with pytest.raises(evaluation.CheckpointNotFoundError,
                     match=r"no checkpoint folder .*never_trained/checkpoints/drn"):
    evaluation.evaluate(_tiny(), workdir)
  assert not os.path.exists(workdir)                       # nothing created
  os.makedirs(os.path.join(workdir, "checkpoints", "drn"))
  with pytest.raises(evaluation.CheckpointNotFoundError, match="no checkpoint in .*checkpoints/drn"):
    evaluation.restore_params(_tiny(), workdir)


def test_wrong_step_and_wrong_preset_are_clear(tiny_run, tmp_path):
  with pytest.raises(evaluation.CheckpointNotFoundError, match="no checkpoint at step 7 .* steps present: 2"):
    evaluation.restore_params(_tiny(), tiny_run, step=7)
  cpu = deepfashion_drn.get_config("cpu")
  with pytest.raises(evaluation.ConfigMismatchError, match=r"another preset.*model\.ngf: trained 4, given 16"):
    evaluation.restore_params(cpu, tiny_run)
  # Without config.json, Orbax's shape check catches it.
  bare = str(tmp_path / "bare")
  shutil.copytree(os.path.join(tiny_run, "checkpoints"), os.path.join(bare, "checkpoints"))
  with pytest.raises(evaluation.ConfigMismatchError, match="another preset"):
    evaluation.restore_params(cpu, bare)


def test_cli_missing_checkpoint_exits_with_message(tmp_path):
  cmd = [sys.executable, os.path.join(REPO, "launch", "evaluate.py"),
         "--config=" + os.path.join(REPO, "configs", "deepfashion_drn.py") + ":tiny",
         f"--workdir={tmp_path / 'none'}"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 1
  assert "CheckpointNotFoundError" in result.stderr
  assert str(tmp_path / "none" / "checkpoints" / "drn") in result.stderr


def test_cheap_metrics(tiny_run):
  config = _tiny()
  trainer, params, step = evaluation.restore_params(config, tiny_run)
  assert step == 2
  batches = evaluation.training_eval_batches(config, batch_size=4, max_pairs=N_PAIRS)
  assert [len(b["source_image"]) for b in batches] == [4, 2]
  out = evaluation.cheap_metrics(trainer, params, batches)
  assert set(out) == {"eval/ssim_plain", "eval/l1", "eval/ssim_plain_coarse", "eval/l1_coarse", "eval/pairs"}
  assert out["eval/pairs"] == N_PAIRS
  # Reference: skimage's SSIM (data range 255) and L1 on the same generated images.
  from skimage.metrics import structural_similarity
  generate = jax.jit(trainer.generate)
  refined, target = [], []
  for b in batches:
    padded = {k: np.concatenate([b[k]] * 2)[:4] for k in ("source_image", "source_pose", "target_pose")}
    refined.append(np.clip(np.asarray(generate(params, padded)["refined"]), -1, 1)[:len(b["target_image"])])
    target.append(b["target_image"])
  refined, target = np.concatenate(refined), np.concatenate(target)
  ref_ssim = np.mean([structural_similarity(g, t, channel_axis=-1, data_range=255, gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False)
                      for g, t in zip(image_io.to_uint8(refined).astype(np.float64),
                                      image_io.to_uint8(target).astype(np.float64))])
  np.testing.assert_allclose(out["eval/ssim_plain"], ref_ssim, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["eval/l1"], float(np.mean(np.abs(refined - target))), rtol=1e-4)
  assert -1 <= out["eval/ssim_plain_coarse"] <= 1 and out["eval/l1_coarse"] >= 0


def test_models_without_full_evaluation_say_where_their_metrics_are(tmp_path):
  from configs import deepfashion_hpn
  with pytest.raises(evaluation.UnsupportedModelError, match=r"eval/level_<H>x<W>\.json"):
    evaluation.restore_params(deepfashion_hpn.get_config("tiny"), str(tmp_path))

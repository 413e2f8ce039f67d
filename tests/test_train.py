"""End-to-end training: the CLI leaves its artefacts; stop-and-resume equals an uninterrupted run."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from hpt_jax.configs import deepfashion_drn
from hpt_jax import checkpoints, parallel, runs
from hpt_jax.train import drn as drn_train
from hpt_jax.train import loop
from hpt_jax.runs import event_scalars
from tests._helpers import assert_same_tree, init_like_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(total_steps, **overrides):
  config = deepfashion_drn.get_config("tiny")
  config.total_steps = total_steps
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 100
  config.eval_every_steps = 0
  for k, v in overrides.items():
    config[k] = v
  return config


def _restore(workdir, config, step):
  trainer = drn_train.DRNTrainer(config)
  shapes = jax.eval_shape(lambda key: trainer.init_state(key, tuple(config.data.image_size)),
                          jax.random.PRNGKey(123))
  abstract = checkpoints.abstract_like(shapes, parallel.replicated(parallel.make_mesh()))
  ckpt = checkpoints.StageCheckpointer(os.path.join(workdir, "checkpoints", "drn"))
  try:
    return ckpt.restore(abstract, step=step)
  finally:
    ckpt.close()


def _iterator_state(workdir, step):
  [path] = glob.glob(os.path.join(workdir, "checkpoints", "drn", str(step), "data_iter", "process_0-of-1.json"))
  with open(path) as f:
    return json.load(f)


def test_stop_and_resume_matches_uninterrupted_run(tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  drn_train.train_and_evaluate(_tiny(4), straight)
  drn_train.train_and_evaluate(_tiny(2), resumed)          # "interrupted" after 2 cycles
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints", "drn"))) == ["2"]
  drn_train.train_and_evaluate(_tiny(4), resumed)          # rerun with the same workdir resumes
  a = _restore(straight, _tiny(4), 4)
  b = _restore(resumed, _tiny(4), 4)
  assert int(a.step) == int(b.step) == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  # Same data order: the grain iterator is at the same position after both runs.
  assert _iterator_state(straight, 4) == _iterator_state(resumed, 4)
  # And the parameters did move away from the initialisation.
  init = init_like_training(drn_train.DRNTrainer(_tiny(4)), (32, 24), seed=_tiny(4).seed)
  assert not np.allclose(np.asarray(jax.tree.leaves(init.params)[0]), np.asarray(jax.tree.leaves(a.params)[0]))


def test_rerun_from_the_record_repeats_the_run_bit_for_bit(tmp_path):
  """Same config and seed: bit-identical parameters and logged scalars (CPU); launch/train.py
  --rerun restores the config from config.json with its types."""
  first, again = str(tmp_path / "first"), str(tmp_path / "again")
  config = _tiny(4)
  overrides = {"total_steps": 4, "log_every_steps": 1, "checkpoint_every_steps": 2, "sample_every_steps": 100,
               "eval_every_steps": 0}
  runs.write_config_json(first, config, {"config": "deepfashion_drn:tiny", "overrides": overrides})
  drn_train.train_and_evaluate(config, first)
  restored, warnings = runs.rerun_config(first)
  assert warnings == []
  assert restored.to_dict() == config.to_dict() and isinstance(restored.data.image_size, tuple)
  cmd = [sys.executable, os.path.join(REPO, "launch", "train.py"), f"--rerun={first}", f"--workdir={again}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.load(open(os.path.join(again, "config.json")))
  assert record["source"] == {"rerun": first, "config": "deepfashion_drn:tiny"}
  assert record["config"] == json.loads(config.to_json_best_effort())
  assert_same_tree(_restore(first, config, 4), _restore(again, config, 4))
  a, b = event_scalars(first), event_scalars(again)
  assert "refined/l1" in a and "disc/shape" in a and len(a["refined/l1"]) == 4
  assert a == b
  assert _iterator_state(first, 4) == _iterator_state(again, 4)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / "nan")
  drn_train.train_and_evaluate(_tiny(2), workdir)
  original = drn_train.DRNTrainer.train_step

  def poisoned(self, state, batch, vgg_params):
    new_state, metrics = original(self, state, batch, vgg_params)
    metrics["refined/style"] = metrics["refined/style"] * np.float32("nan")
    return new_state, metrics

  monkeypatch.setattr(drn_train.DRNTrainer, "train_step", poisoned)
  with pytest.raises(loop.NonFiniteLossError, match=r"refined/style at step 3"):
    drn_train.train_and_evaluate(_tiny(4), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "drn"))) == ["2"]


def test_cli_runs_end_to_end(tmp_path):
  workdir = tmp_path / "cli"
  cmd = [sys.executable, os.path.join(REPO, "launch", "train.py"),
         "--config=deepfashion_drn:tiny",
         f"--workdir={workdir}", "--config.total_steps=2", "--config.sample_every_steps=2",
         "--config.checkpoint_every_steps=2", "--config.eval_every_steps=2"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.isdir(workdir / "checkpoints" / "drn" / "2" / "state")
  [events] = glob.glob(str(workdir / "events.out.tfevents.*"))
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"])
  for tag in ("coarse/l1", "refined/l1", "refined/style", "disc/shape", "lr", "grad_norm/detail",
              "eval/ssim_plain", "eval/l1_coarse"):
    assert tag in tags, (tag, sorted(tags))
  assert (workdir / "samples" / "step_2.png").is_file()
  payload = json.loads((workdir / "config.json").read_text())
  assert payload["config"]["total_steps"] == 2          # the override is recorded
  assert payload["versions"]["jax"] == jax.__version__
  assert "git_commit" in payload
  from PIL import Image
  grid = Image.open(workdir / "samples" / "step_2.png")
  assert grid.size == (5 * 24, 4 * 32)                  # 5 columns, 4 eval examples of 32×24
  # Compilations are announced and timed; the run ends with a summary that says where things are.
  assert "drn: compiling the train step" in result.stderr and "drn: train step compiled and run in" in result.stderr
  assert "compiling the initialisation of the DRN networks" in result.stderr
  summary = result.stdout
  assert f"run {workdir}:" in summary and "drn: steps 0→2 in" in summary and "final coarse/total=" in summary
  assert f"checkpoint {workdir / 'checkpoints' / 'drn' / '2'}" in summary
  assert f"samples: {workdir / 'samples'}" in summary and f"tensorboard --logdir {workdir}" in summary
  stage = json.loads((workdir / "summary.json").read_text())["stages"]["drn"]
  assert (stage["start_step"], stage["end_step"]) == (0, 2) and stage["first_step_s"] > 0
  assert f"refined/total={stage['final_metrics']['refined/total']:.4g}" in summary


def test_cli_reports_bad_data_with_file_and_row(tmp_path):
  bad_pairs = tmp_path / "pairs.csv"
  bad_pairs.write_text("from,to\nnot_annotated.jpg,fashionWOMENBlouses_Shirtsid0000531105_2side.jpg\n")
  cmd = [sys.executable, os.path.join(REPO, "launch", "train.py"),
         "--config=deepfashion_drn:tiny",
         f"--workdir={tmp_path / 'wd'}", f"--config.data.pairs={bad_pairs}"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  [line] = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert str(bad_pairs) in line and "line 2" in line
  assert "not_annotated.jpg" in result.stderr

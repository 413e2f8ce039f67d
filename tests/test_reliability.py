"""Preemption and crash safety (docs/reliability.md): SIGTERM, kill -9 inside a save, a failing save.

Every fault is produced in a real ``launch/train.py`` subprocess on a tiny preset; its final
parameters are compared bit for bit with an uninterrupted run of the same config made in this
process. Test-only hooks put the fault at a deterministic point: ``HPT_JAX_TEST_SIGTERM_AT_STEP``
(the loop sends SIGTERM after a step), ``HPT_JAX_TEST_SAVE_FAULT`` (pause or ENOSPC inside
Orbax's save, after the data are written and before the commit rename).

The subprocesses run ``launch/train.py`` with TensorFlow hidden (``sys.modules['tensorflow'] =
None``): the launcher then writes scalars to the log instead of TensorBoard events, which saves
seconds of import per process and changes nothing that is tested here.
"""

import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hpt_jax import checkpoints, preemption, registry
from tests._helpers import assert_same_tree, saved_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LAUNCH = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv[0] = {path!r}; "
           "runpy.run_path({path!r}, run_name='__main__')").format(path=os.path.join(REPO, "launch", "train.py"))

# The tiny configs of tests/test_train.py, test_hpn.py and test_diaf.py (same compiled programs,
# shared through the compilation cache), saving only at the end or when stopped.
DRN = ("deepfashion_drn:tiny", {"checkpoint_every_steps": 100, "sample_every_steps": 100, "log_every_steps": 1})
HPN = ("deepfashion_hpn:tiny", {"checkpoint_every_steps": 100, "sample_every_steps": 4, "steps_per_level": 4,
                                "model.num_levels": 2, "local_descriptors": (18, 31), "keep_checkpoints": 10})
DIAF = ("deepfashion_diaf:tiny", {"checkpoint_every_steps": 100, "sample_every_steps": 100, "batch_size": 4})


def _command(config, workdir, overrides):
  return ([sys.executable, "-c", _LAUNCH, f"--config={config}", f"--workdir={workdir}"]
          + [f"--config.{k}={v}".replace(" ", "") for k, v in overrides.items()])


def _train(config, workdir, overrides, env=None, **kwargs):
  """Runs ``launch/train.py`` to the end; returns the CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(_command(config, workdir, overrides), capture_output=True, text=True,
                        timeout=300, env=full_env, **kwargs)


def _in_process(config_name, workdir, overrides):
  """The uninterrupted reference run, in this process (train_and_evaluate, no signal handler)."""
  name, preset = config_name.split(":")
  config = importlib.import_module(f"hpt_jax.configs.{name}").get_config(preset)
  config.update_from_flattened_dict(overrides)
  registry.get(config.model_name).train_module().train_and_evaluate(config, workdir)


def _iterator(workdir, stage, step):
  [path] = glob.glob(os.path.join(workdir, "checkpoints", stage, str(step), "data_iter", "*.json"))
  with open(path) as f:
    return json.load(f)


def _steps(workdir, stage):
  return checkpoints.checkpoint_steps(os.path.join(workdir, "checkpoints", stage))


@pytest.fixture(scope="module")
def drn_reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("drn_reference"))
  _in_process(DRN[0], workdir, DRN[1])
  return workdir


def _preempt_and_resume(tmp_path, family, at, last_stage, last_step, reference, stopped_stage,
                        extra=None, group=False):
  config, overrides = family
  overrides = dict(overrides, **(extra or {}))
  workdir = str(tmp_path / "run")
  env = {preemption.TEST_SIGNAL_ENV: at + ("!group" if group else "")}
  stopped = _train(config, workdir, overrides, env=env, start_new_session=group)
  assert stopped.returncode == preemption.EXIT_CODE == 143, stopped.stderr[-3000:]
  step = int(at.split("@")[0])
  line = f"preempted: {stopped_stage} stopped at step {step} of"
  assert line in stopped.stderr and "exiting with status 143" in stopped.stderr, stopped.stderr[-3000:]
  assert _steps(workdir, stopped_stage) == [step]          # the save at the step reached
  assert "Traceback" not in stopped.stderr
  stages_at_stop = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  # The rerun: the launcher's train_and_evaluate on the same workdir, here in this process (no
  # second process start). It resumes the stopped stage at the saved step.
  _in_process(config, workdir, overrides)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["stages"][stopped_stage]["start_step"] == step
  assert_same_tree(saved_state(reference, last_stage, last_step), saved_state(workdir, last_stage, last_step))
  if not extra:    # (grain's iterator state has another form with worker processes)
    assert _iterator(reference, last_stage, last_step) == _iterator(workdir, last_stage, last_step)
  return stopped, stages_at_stop


def test_sigterm_drn_saves_exits_143_and_resumes_exactly(tmp_path, drn_reference):
  # SIGTERM to the whole process group, as SLURM signals every process of a job: the grain worker
  # must survive it, the save reads the iterator position and the resumed run sees the same data.
  stopped, _ = _preempt_and_resume(tmp_path, DRN, "2", "drn", 4, drn_reference, "drn",
                                   extra={"data.num_workers": 1}, group=True)
  assert "received SIGTERM" in stopped.stderr
  assert "grain worker" in stopped.stderr and ": ignoring SIGTERM; the training process saves" in stopped.stderr


@pytest.mark.parametrize("family,at,stage,last_stage,last_step,done_before", [
    (HPN, "2@level_32x24", "level_32x24", "level_32x24", 4, {"level_16x12": 4}),
    (DIAF, "1@generator", "generator", "pixel_warp", 2, {"flow": 2}),
], ids=["hpn_level_1", "diaf_generator_phase"])
def test_sigterm_in_a_later_level_or_phase_resumes_exactly(tmp_path, family, at, stage, last_stage, last_step,
                                                           done_before):
  reference = str(tmp_path / "reference")
  _in_process(family[0], reference, family[1])
  _, stages_at_stop = _preempt_and_resume(tmp_path, family, at, last_stage, last_step, reference, stage)
  # Stopped in that level/phase: the ones before were complete, none after it had started.
  assert stages_at_stop == sorted([*done_before, stage])


def test_sigterm_during_first_compilation_exits_at_once_with_nothing_saved(tmp_path):
  workdir = tmp_path / "compiling"
  # A β1 no other test uses: the initialisation comes from the compilation cache, the train step
  # is not there and really compiles when the signal comes.
  overrides = dict(DRN[1], **{"optimizer.b1": 0.5432})
  proc = subprocess.Popen(_command(DRN[0], workdir, overrides), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          text=True)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if "drn: compiling the train step" in line:
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.communicate(timeout=120)[1]
  log = "".join(seen) + rest
  assert proc.returncode == 143, log[-3000:]
  assert "nothing to save" in log and "train step compiled" not in log, log[-3000:]
  assert _steps(str(workdir), "drn") == []


def test_kill_9_inside_a_save_then_a_failing_save_keep_a_resumable_checkpoint(tmp_path, drn_reference):
  workdir = str(tmp_path / "crash")
  overrides = dict(DRN[1], checkpoint_every_steps=1)
  marker = str(tmp_path / "paused")
  # 1. kill -9 while Orbax writes step 2 (data written, not yet renamed to its final name).
  env = dict(os.environ, **{checkpoints.TEST_FAULT_ENV: f"pause:2:{marker}"})
  proc = subprocess.Popen(_command(DRN[0], workdir, overrides), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env)
  deadline = time.monotonic() + 300
  while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert os.path.exists(marker), "the run never reached the pause inside the save"
  proc.kill()
  proc.wait()
  stage_dir = os.path.join(workdir, "checkpoints", "drn")
  half = glob.glob(os.path.join(stage_dir, "2" + checkpoints.TMP_SUFFIX + "*"))
  assert half and _steps(workdir, "drn") == [1]
  # 2. The rerun deletes the half-written folder, resumes from step 1, and fails to save step 4
  #    (ENOSPC injected into the write): one-line error, status 1, step 3 kept and restorable.
  failed = _train(DRN[0], workdir, overrides, env={checkpoints.TEST_FAULT_ENV: "enospc:4"})
  assert "deleting 1 half-written checkpoint(s)" in failed.stderr
  assert f"resumed from {stage_dir} at step 1" in failed.stderr
  assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
  [error] = [l for l in failed.stderr.splitlines() if l.startswith("error: ")]
  assert f"saving checkpoint {stage_dir}/4 failed" in error and "No space left on device" in error
  assert f"the previous checkpoint {stage_dir}/3 is kept" in error
  assert _steps(workdir, "drn") == [1, 2, 3]
  assert not glob.glob(os.path.join(stage_dir, "*" + checkpoints.TMP_SUFFIX + "*"))
  # 3. A rerun with room finishes where the uninterrupted run did (in this process).
  _in_process(DRN[0], workdir, overrides)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["stages"]["drn"]["start_step"] == 3
  assert_same_tree(saved_state(drn_reference, "drn", 4), saved_state(workdir, "drn", 4))


def test_multi_process_runs_stop_at_the_step_orbax_reports(tmp_path, monkeypatch):
  """The loop's multi-process branch (the two-process run itself is not tested: docs/reliability.md):
  it asks Orbax's ``reached_preemption`` after every step with a step id that grows over stages,
  saves at the step it reports and exits with 143, whatever the local SIGTERM flag says."""
  import flax.struct
  import jax.numpy as jnp
  from hpt_jax.train import loop

  @flax.struct.dataclass
  class State:
    step: jax.Array
    w: jax.Array

  monkeypatch.setattr(preemption, "multi_process", lambda: True)
  ckpt = checkpoints.StageCheckpointer(str(tmp_path / "stage"))
  asked = []

  def reached(step_id):
    asked.append(step_id)
    return len(asked) == 3

  monkeypatch.setattr(ckpt.manager, "reached_preemption", reached)
  step_fn = jax.jit(lambda s, b: (s.replace(step=s.step + 1, w=s.w + b), {"loss": jnp.sum(s.w)}))
  state = State(step=jnp.zeros((), jnp.int32), w=jnp.zeros(3))
  with pytest.raises(preemption.Preempted) as stopped:
    loop.run_steps(state, step_fn, lambda: jnp.ones(3), total_steps=10, ckpt=ckpt, data_iter=None,
                   writer=loop._LoggingOnlyWriter(), log_every=0, checkpoint_every=0)
  assert stopped.value.code == 143 and "stopped at step 3 of 10" in stopped.value.message
  assert asked[:3] == [asked[0], asked[0] + 1, asked[0] + 2]   # (Orbax's save asks again itself)
  assert ckpt.latest_step() == 3
  np.testing.assert_array_equal(np.asarray(ckpt.restore(state).w), [3.0, 3.0, 3.0])
  ckpt.close()

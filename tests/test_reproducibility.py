"""Reproducibility: a run's record is enough to rerun it.

Determinism (same config and seed → bit-identical parameters and logged scalars) is tested next to
each family's training runs, sharing their compiled programs: ``tests/test_train.py`` (DRN, with
``launch/train.py --rerun``), ``tests/test_hpn.py`` (two levels), ``tests/test_diaf.py`` (three
phases). Here:

* ``config.json``: git dirty flag, XLA settings, data-file digests; a resume with another model
  field stops, other changes go to ``config_history.jsonl`` and the original record stays.
* ``runs.rerun_config`` restores the old config with its types (tuples), checks input paths and
  warns about environment differences.
"""

import hashlib
import json
import os

import pytest

from hpt_jax import errors, parallel, runs
from hpt_jax.configs import deepfashion_drn


def _drn_tiny():
  config = deepfashion_drn.get_config("tiny")
  config.total_steps = 2
  return config


# ------------------------------------------------------------------ run records
def test_config_json_records_code_xla_and_data_and_guards_resumes(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = _drn_tiny()
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  runs.write_config_json(workdir, config, {"config": "deepfashion_drn:tiny"})
  record = json.load(open(os.path.join(workdir, "config.json")))
  assert record["git_dirty"] in (True, False, None) and record["git_commit"]
  assert record["compiler"]["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
  pairs = record["data_files"]["data.pairs"]
  assert pairs["path"] == config.data.pairs
  assert pairs["sha256"] == hashlib.sha256(open(config.data.pairs, "rb").read()).hexdigest()
  assert pairs["bytes"] == os.path.getsize(config.data.pairs)
  assert set(record["data_files"]) == set(runs.DATA_FILE_FIELDS)
  original = open(os.path.join(workdir, "config.json")).read()
  # The same config again: nothing logged, nothing appended.
  runs.write_config_json(workdir, config)
  assert not os.path.exists(os.path.join(workdir, runs.HISTORY_FILE))
  # Another total_steps and XLA flag: allowed, logged to the history, the record kept.
  longer = _drn_tiny()
  longer.total_steps = 6
  monkeypatch.setenv("XLA_FLAGS", "")
  runs.write_config_json(workdir, longer)
  assert open(os.path.join(workdir, "config.json")).read() == original
  [line] = open(os.path.join(workdir, runs.HISTORY_FILE)).read().splitlines()
  entry = json.loads(line)
  assert "total_steps: 2 → 6" in entry["differences"]
  assert any(d.startswith("compiler.XLA_FLAGS: '--xla_cpu_enable_fast_math=false' → ''") for d in entry["differences"])
  assert entry["record"]["config"]["total_steps"] == 6
  # A model field: the resume stops, naming it.
  wider = _drn_tiny()
  wider.model.ngf = 8
  with pytest.raises(runs.ResumeMismatchError, match=r"model\.ngf: 4 → 8"):
    runs.write_config_json(workdir, wider)
  assert isinstance(runs.ResumeMismatchError("x"), errors.UserError)


def test_tfds_runs_record_the_prepared_dataset(tmp_path):
  config = _drn_tiny()
  config.data.source = "tfds"
  config.data.tfds_dir = str(tmp_path)
  info = tmp_path / "deepfashion_pose_transfer" / "crop_256x176" / "1.0.0" / "dataset_info.json"
  info.parent.mkdir(parents=True)
  info.write_text('{"splits": []}')
  files = runs.data_files(config)
  assert files["data.tfds"]["name"] == config.data.tfds_name == "deepfashion_pose_transfer/crop_256x176"
  assert files["data.tfds"]["sha256"] == hashlib.sha256(b'{"splits": []}').hexdigest()
  assert "data.pairs" not in files and "eval_data.pairs" in files      # eval still reads folders
  config.data.tfds_dir = str(tmp_path / "not_prepared")
  assert runs.data_files(config)["data.tfds"]["missing"] is True


def test_rerun_checks_paths_and_warns_about_differences(tmp_path):
  workdir = str(tmp_path / "run")
  pairs = tmp_path / "pairs.csv"
  pairs.write_bytes(open(deepfashion_drn.get_config("tiny").data.pairs, "rb").read())
  config = _drn_tiny()
  config.data.pairs = str(pairs)
  runs.write_config_json(workdir, config, {"config": "deepfashion_drn:tiny"})
  record = json.load(open(os.path.join(workdir, "config.json")))
  record["versions"]["flax"] = "0.0.1"
  record["config"]["retired_field"] = 1
  json.dump(record, open(os.path.join(workdir, "config.json"), "w"))
  with open(pairs, "a") as f:
    f.write("\n")                                     # the data changed since the run
  restored, warnings = runs.rerun_config(workdir)
  assert restored.data.pairs == str(pairs) and restored.total_steps == 2
  assert any(w.startswith("versions.flax: '0.0.1' →") for w in warnings)
  assert any(w.startswith("data_files.data.pairs.sha256:") for w in warnings)
  assert any(w.startswith("retired_field: recorded as 1") for w in warnings)
  os.remove(pairs)
  with pytest.raises(errors.MissingFileError, match=r"data\.pairs = .*pairs\.csv no longer exists"):
    runs.rerun_config(workdir)
  with pytest.raises(errors.MissingFileError, match="no config.json"):
    runs.rerun_config(str(tmp_path / "nothing"))


def test_deterministic_flag_sets_the_xla_option_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  parallel.set_deterministic(True, env)
  parallel.set_deterministic(True, env)
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 --xla_gpu_deterministic_ops=true"
  env = {}
  parallel.set_deterministic(False, env)
  assert env == {}
  assert deepfashion_drn.get_config("cpu").deterministic is False

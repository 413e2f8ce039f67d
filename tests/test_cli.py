"""The launchers' command-line behaviour (hpt_jax.cli): one-line errors, --help, --print_config.

Each case runs the real launcher in a subprocess and checks the exit status, that stderr is at
most a few lines without a traceback, and the words a user needs (the field, the suggestion).
"""

import json
import os
import subprocess
import sys

import pytest

from hpt_jax import cli, errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRN = os.path.join("configs", "deepfashion_drn.py")


def _run(launcher, *args, env=None, timeout=300):
  return subprocess.run([sys.executable, os.path.join("launch", launcher), *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _short_error(result, code):
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == code, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), lines
  return lines[0]


@pytest.mark.parametrize("args, words", [
    ([f"--config={DRN}:tiny", "--config.bath_size=4"], ["--config.bath_size", "no field 'bath_size'", '"batch_size"']),
    ([f"--config={DRN}:tiny", "--config.model.ngff=4"], ["--config.model.ngff", "no field 'ngff'", '"ngf"']),
    (["--config=configs/no_such_file.py"], ["no such config file", "deepfashion_drn"]),
    (["--config=deepfashion_dnr:tiny"], ["no such config file", 'did you mean "deepfashion_drn"']),
    ([f"--config={DRN}:tinny"], ["no preset 'tinny'", 'did you mean "tiny"']),
    ([f"--config={DRN}:tiny", "--config.batch_size=abc"], ["--config.batch_size=abc", "int"]),
    ([f"--config={DRN}:tiny", "--no_such_flag=1"], ["no_such_flag"]),
    ([f"--config={DRN}:tiny"], ["missing flag --workdir"]),
    ([f"--config={DRN}:tiny", "--workdir=x", "stray"], ["unexpected arguments: stray"]),
])
def test_command_line_errors_are_one_line_and_exit_2(args, words):
  line = _short_error(_run("train.py", *args), 2)
  for w in words:
    assert w in line, (w, line)


def test_batch_the_devices_cannot_divide_is_a_config_error(tmp_path):
  result = _run("train.py", f"--config={DRN}:tiny", f"--workdir={tmp_path}", "--config.batch_size=3",
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "error: batch_size=3 (global) must be divisible by the 2 devices" in result.stderr


def test_other_launchers_share_the_conventions(tmp_path):
  line = _short_error(_run("evaluate.py", f"--workdir={tmp_path}"), 2)
  assert "--config is required" in line and "config.json" in line
  line = _short_error(_run("evaluate.py", f"--compare={tmp_path / 'a'},{tmp_path / 'b'}"), 1)
  assert "no metrics.json" in line
  line = _short_error(_run("benchmark.py", f"--config={DRN}:tinny"), 2)
  assert 'did you mean "tiny"' in line


def test_help_lists_presets_and_fields_and_exits_0():
  result = _run("train.py", f"--config={DRN}:cpu", "--help")
  assert result.returncode == 0, result.stderr[-2000:]
  out = result.stdout
  for preset in ("cpu", "tiny", "benchmark"):
    assert f"\n  {preset} " in out
  assert "  total_steps            500\n" in out and "  batch_size             4\n" in out   # the preset's defaults
  assert "optimizer.*" in out and "hold_fraction" in out and "--print_config" in out
  bare = _run("train.py", "--help")
  assert bare.returncode == 0 and "\n  deepfashion_hpn\n" in bare.stdout and "\n  hpn_1024\n" in bare.stdout


def test_print_config_prints_the_resolved_config_and_exits_0():
  result = _run("train.py", f"--config={DRN}:tiny", "--config.seed=7", "--config.model.ngf=8", "--print_config")
  assert result.returncode == 0, result.stderr[-2000:]
  config = json.loads(result.stdout)
  assert config["seed"] == 7 and config["model"]["ngf"] == 8 and config["batch_size"] == 2   # overrides + preset
  assert config["optimizer"]["hold_fraction"] == 0.5


def test_packaged_configs_by_name_from_any_directory(tmp_path):
  """--config=NAME[:preset] is the installed hpt_jax/configs/NAME.py; a user's own file wins."""
  launcher = os.path.join(REPO, "launch", "train.py")
  def run(*args):
    return subprocess.run([sys.executable, launcher, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
  by_name = run("--config=deepfashion_hpn:tiny", "--print_config")
  assert by_name.returncode == 0, by_name.stderr[-2000:]
  config = json.loads(by_name.stdout)
  assert config["model_name"] == "hpn" and config["data"]["images"].endswith(os.path.join("hpt_jax", "data", "deepfashion_sample", "img"))
  assert os.path.isdir(config["data"]["images"])
  old_path = run("--config=configs/deepfashion_hpn.py:tiny", "--print_config")   # commands written before the move
  assert old_path.returncode == 0 and json.loads(old_path.stdout) == config
  (tmp_path / "deepfashion_hpn.py").write_text(
      "import ml_collections\nPRESETS = {'': 'mine'}\n"
      "def get_config(preset=None):\n  return ml_collections.ConfigDict({'model_name': 'mine'})\n")
  own = run("--config=deepfashion_hpn.py", "--print_config")
  assert own.returncode == 0 and json.loads(own.stdout) == {"model_name": "mine"}


def test_user_errors_derive_from_the_base_the_cli_catches():
  from hpt_jax import checkpoints, evaluation, inference, registry, weights
  from hpt_jax.train import loop
  from hpt_jax.input_pipeline import patn_format
  for cls in (patn_format.DataError, weights.WeightsError, weights.WeightsNotFoundError, loop.NonFiniteLossError,
              checkpoints.CheckpointNotFoundError, checkpoints.CheckpointMismatchError, inference.InputError,
              inference.ConfigError, registry.UnknownFamilyError, evaluation.CompareError, cli.UsageError):
    assert issubclass(cls, errors.UserError), cls
  assert issubclass(patn_format.DataError, ValueError) and issubclass(errors.MissingFileError, FileNotFoundError)


def test_compilation_cache_location_and_switch(monkeypatch, tmp_path):
  import jax
  before = jax.config.jax_compilation_cache_dir
  try:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv(cli.CACHE_ENV, str(tmp_path / "xla"))
    assert cli.enable_compilation_cache() == str(tmp_path / "xla") and os.path.isdir(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    monkeypatch.setenv(cli.CACHE_ENV, "off")
    assert cli.enable_compilation_cache() is None
    monkeypatch.delenv(cli.CACHE_ENV)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))   # JAX's variable wins
    assert cli.enable_compilation_cache() == str(tmp_path / "jax_own")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)

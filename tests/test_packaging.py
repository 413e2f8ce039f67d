"""The installable package: the wheel's contents, an installed copy run from another directory.

One module-scoped wheel build (``pip wheel --no-deps --no-build-isolation``, a few seconds) is
checked for what a user needs without the repository: every package, the configs, the bundled
sample with its licence note, the console scripts. The wheel is then installed with ``--no-deps``
into a virtual environment that sees this environment's packages (``--system-site-packages``), and
``hpt-train --config=deepfashion_drn:tiny`` trains two steps from an empty directory. A full fresh
install (dependencies from the registry) is too slow for CI; the README's "Install" section reports
one done by hand.
"""

import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

from hpt_jax.data import DEEPFASHION_SAMPLE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("hpt-train", "hpt-evaluate", "hpt-benchmark", "hpt-transfer", "hpt-fetch-models", "hpt-prepare-data")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("wheel")
  build = tmp_path_factory.mktemp("build")
  env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
  # A copy of the tree keeps setuptools' build/ and *.egg-info out of the checkout.
  src = build / "src"
  files = subprocess.run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                         capture_output=True).stdout.decode().split("\0")
  for f in filter(None, files):
    if os.path.isfile(os.path.join(REPO, f)):
      os.makedirs(os.path.dirname(src / f), exist_ok=True)
      with open(os.path.join(REPO, f), "rb") as a, open(src / f, "wb") as b:
        b.write(a.read())
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  [path] = glob.glob(str(out / "hpt_jax-*.whl"))
  return path


def test_wheel_holds_packages_configs_sample_and_scripts(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  for module in ("hpt_jax/__init__.py", "hpt_jax/cli.py", "hpt_jax/inference.py", "hpt_jax/train/loop.py",
                 "hpt_jax/models/drn.py", "hpt_jax/metrics/fid.py", "hpt_jax/input_pipeline/pipeline.py",
                 "hpt_jax/commands/train.py", "hpt_jax/commands/transfer.py", "hpt_jax/data/__init__.py",
                 "hpt_jax/commands/prepare_data.py", "hpt_jax/input_pipeline/tfds_builders.py"):
    assert module in names, module
  configs = sorted(n for n in names if n.startswith("hpt_jax/configs/") and not n.endswith("__init__.py"))
  assert [os.path.basename(c) for c in configs] == sorted(
      os.path.basename(p) for p in glob.glob(os.path.join(REPO, "hpt_jax", "configs", "*.py"))
      if not p.endswith("__init__.py"))
  # The bundled sample, whole, with its licence note.
  sample = {n for n in names if n.startswith("hpt_jax/data/deepfashion_sample/")}
  on_disk = {os.path.relpath(p, os.path.dirname(os.path.dirname(DEEPFASHION_SAMPLE))).replace(os.sep, "/")
             for p in glob.glob(os.path.join(DEEPFASHION_SAMPLE, "**", "*"), recursive=True) if os.path.isfile(p)}
  # 314 images, annotation.csv, pairs.csv, pairs_train.csv, pairs_eval.csv and the face cache faces.npz
  assert len(on_disk) == 314 + 5 and {"hpt_jax/" + p for p in on_disk} == sample
  assert "hpt_jax/data/deepfashion_sample/faces.npz" in sample
  assert "hpt_jax/data/README.md" in names and "hpt_jax/data/SOURCE.md" in names
  # Nothing of the checkout that is not the library.
  assert not any(n.startswith(("tests/", "launch/", "configs/", "input_pipeline/", "docs/")) for n in names)
  [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
  text = zipfile.ZipFile(wheel).read(entry_points).decode()
  for script in SCRIPTS:
    assert f"{script} = hpt_jax.commands." in text, script
  [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
  meta = zipfile.ZipFile(wheel).read(metadata).decode()
  for extra in ("gpu", "gpu-cuda13", "tpu", "tensorboard", "pose", "video", "transfer", "tfds", "test", "all"):
    assert f"Provides-Extra: {extra}" in meta, extra
  # Accelerator JAX only through the extras; TensorFlow never in the base set.
  base = [l for l in meta.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
  assert any(l.startswith("Requires-Dist: jax") and "cuda" not in l for l in base)
  assert not any("tensorflow" in l or "cuda" in l or "tpu" in l for l in base), base
  # Reading and writing TFDS ArrayRecord data sets: the tfds extra, not the base set.
  tfds_extra = [l for l in meta.splitlines() if l.startswith("Requires-Dist:") and 'extra == "tfds"' in l]
  assert any("array-record" in l for l in tfds_extra) and any("tensorflow-datasets" in l for l in tfds_extra)
  assert not any("array-record" in l or "tensorflow-datasets" in l for l in base), base


def test_installed_wheel_trains_from_another_directory(wheel, tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                         "--disable-pip-version-check", wheel], capture_output=True, text=True, timeout=300)
  if proc.returncode != 0 and "no such option: --python" in proc.stderr:   # pip < 22.3
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", wheel], capture_output=True,
                          text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  work = tmp_path / "elsewhere"
  work.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
  where = subprocess.run([str(python), "-c", "import hpt_jax, hpt_jax.configs.deepfashion_drn as c; "
                          "print(hpt_jax.__file__); print(c.get_config('tiny').data.images)"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
  assert where.returncode == 0, where.stderr[-2000:]
  package_file, images = where.stdout.split()
  assert package_file.startswith(str(venv)), package_file    # the installed copy, not the checkout
  assert images.startswith(str(venv)) and len(os.listdir(images)) == 314
  # The overrides of test_train.py's command-line run, so the two share compiled programs.
  result = subprocess.run([str(venv / "bin" / "hpt-train"), "--config=deepfashion_drn:tiny", "--workdir=w",
                           "--config.total_steps=2", "--config.sample_every_steps=2",
                           "--config.checkpoint_every_steps=2", "--config.eval_every_steps=2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.isdir(work / "w" / "checkpoints" / "drn" / "2" / "state")
  record = json.loads((work / "w" / "config.json").read_text())
  assert record["config"]["data"]["images"] == images
  assert "drn: steps 0→2" in result.stdout


def test_missing_optional_package_names_its_extra(tmp_path):
  """A feature whose optional dependency is absent says which extra installs it."""
  code = ("import sys; sys.modules['imageio'] = None; sys.modules['imageio.v2'] = None\n"
          "import numpy as np\nfrom hpt_jax import errors, transfer\n"
          "try:\n  transfer.write_video(sys.argv[1], [np.zeros((8, 8, 3), np.uint8)], 5.0)\n"
          "except errors.MissingDependencyError as e:\n  print(e); sys.exit(3)\n")
  proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.mp4")], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "'imageio'" in proc.stdout and "pip install 'hpt-jax[video]'" in proc.stdout


def test_cpu_warning_for_accelerator_presets():
  """A paper-size preset on the CPU backend warns with the expected step time; reduced ones do not."""
  from hpt_jax import cli, parallel
  drn = cli.config_flops_per_pair("deepfashion_drn")
  assert drn == 2.98e12 and cli.config_flops_per_pair("deepfashion_drn:cpu") is None
  assert cli.config_flops_per_pair("configs/hpn_1024.py:benchmark") == 3.85e12
  message = parallel.cpu_step_warning(drn, 8, 40000, backend="cpu", cpu_cores=2, what="--config=deepfashion_drn")
  # 8 pairs × 2.98 TFLOP at 2 × 19 GFLOP/s = 627 s per step; 40,000 steps = 290 days.
  assert "≈627 s per step" in message and "23.8 TFLOP" in message and "≈290 days for 40,000 steps" in message
  assert parallel.cpu_step_warning(drn, 8, 40000, backend="gpu", cpu_cores=2, what="x") is None
  assert parallel.cpu_step_warning(None, 8, 40000, backend="cpu", cpu_cores=2, what="x") is None
  assert parallel.cpu_step_warning(5.2e10 / 4, 4, 500, backend="cpu", cpu_cores=2, what="x") is None   # :cpu, 1.4 s


def test_multiprocess_environment_detection():
  """jax.distributed.initialize() runs for the launchers its auto-detection knows, and only then."""
  from hpt_jax.parallel import multiprocess_environment as detect
  assert detect({}) is None and detect({"SLURM_NTASKS": "1", "OMPI_COMM_WORLD_SIZE": "1"}) is None
  assert detect({"SLURM_NTASKS": "16", "SLURM_PROCID": "3"}) == "slurm"
  assert detect({"OMPI_COMM_WORLD_SIZE": "2"}) == "openmpi"
  assert detect({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5"}) == "tpu"
  assert detect({"TPU_WORKER_HOSTNAMES": "localhost"}) is None   # a single-host TPU VM
  assert detect({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}) == "explicit"

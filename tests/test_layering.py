"""The import graph: dependencies point down.

Nothing in ``hpt_jax/`` outside ``hpt_jax/train/`` (the command modules ``hpt_jax/commands/`` and
the input pipeline included) and no launcher imports ``hpt_jax.train`` (statically, anywhere in the file); models import neither training,
evaluation nor inference; importing inference/evaluation/transfer loads no training module and no
TensorFlow (nor does the pose estimator on ``ai_edge_litert``), and the keypoint-file readers load
no JAX. The registry names training modules by string; ``hpt_jax/commands/train.py`` and
``hpt_jax/commands/benchmark.py`` load them through ``Family.train_module()``. ``launch/*.py`` only
run the command modules.
"""

import ast
import os
import subprocess
import sys

from hpt_jax import errors, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(path: str) -> set[str]:
  """Every module a file imports (absolute names; ``from a import b`` gives ``a`` and ``a.b``)."""
  tree = ast.parse(open(path).read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def _py_files(folder: str):
  for root, _, files in os.walk(os.path.join(REPO, folder)):
    for f in files:
      if f.endswith(".py"):
        yield os.path.relpath(os.path.join(root, f), REPO)


def _offenders(files, prefixes):
  bad = {}
  for f in files:
    hits = sorted(m for m in _imports(os.path.join(REPO, f)) if any(m == p or m.startswith(p + ".") for p in prefixes))
    if hits:
      bad[f] = hits
  return bad


def test_only_training_imports_training_code():
  library = [f for f in _py_files("hpt_jax") if not f.startswith(os.path.join("hpt_jax", "train"))]
  launchers = list(_py_files("launch"))
  assert len(library) > 20 and "hpt_jax/inference.py" in library and "launch/evaluate.py" in launchers
  assert "hpt_jax/transfer.py" in library and "launch/transfer.py" in launchers
  assert "hpt_jax/commands/train.py" in library and "hpt_jax/input_pipeline/pipeline.py" in library
  assert _offenders(library + launchers, ["hpt_jax.train"]) == {}
  # Each launcher runs its command module and nothing else of the project.
  for f in launchers:
    if not f.endswith("__init__.py"):
      name = os.path.basename(f)[:-3]
      assert {m for m in _imports(os.path.join(REPO, f)) if m.startswith("hpt_jax")} == {
          "hpt_jax.commands", f"hpt_jax.commands.{name}"}, f
  models = list(_py_files(os.path.join("hpt_jax", "models")))
  assert _offenders(models, ["hpt_jax.train", "hpt_jax.evaluation", "hpt_jax.inference", "hpt_jax.registry"]) == {}
  # The train command reaches the trainers through the registry only; every command uses hpt_jax.cli.
  train_launcher = _imports(os.path.join(REPO, "hpt_jax", "commands", "train.py"))
  assert "hpt_jax.cli" in train_launcher and not any(m.startswith("hpt_jax.train") for m in train_launcher)
  # The error base classes depend on nothing, so every layer (input_pipeline included) can use them.
  assert not any(m.startswith("hpt_jax") for m in _imports(os.path.join(REPO, "hpt_jax", "errors.py")))


def test_inference_and_evaluation_load_no_training_module():
  code = ("import sys; import hpt_jax.inference, hpt_jax.evaluation, hpt_jax.registry; "
          "from hpt_jax.registry import FAMILIES; [f.inference_class() for f in FAMILIES.values()]; "
          "bad = sorted(m for m in sys.modules if m.startswith('hpt_jax.train') or m == 'tensorflow'); "
          "print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


_TRANSFER_IMPORTS = """
import importlib.util, os, sys
import hpt_jax.keypoint_files
assert "jax" not in sys.modules, "keypoint_files imported JAX"
import hpt_jax.transfer
from hpt_jax.metrics import pose_estimator as pe
if importlib.util.find_spec("ai_edge_litert") and all(
    os.path.isfile(os.path.join(pe.default_model_dir(), m)) for m in (pe.LANDMARK_MODEL, pe.DETECTOR_MODEL)):
  pe.MediaPipePoseEstimator(person_detector=True)    # TF Lite without TensorFlow
bad = sorted(m for m in sys.modules if m.startswith("hpt_jax.train") or m == "tensorflow")
print(bad); sys.exit(1 if bad else 0)
"""


def test_transfer_loads_no_training_module_and_no_tensorflow():
  """Transfer works where TensorFlow is absent (the GPU machines): its modules, and the pose
  estimator where ``ai_edge_litert`` is installed, load no TensorFlow and no training code; the
  keypoint-file readers load no JAX."""
  proc = subprocess.run([sys.executable, "-c", _TRANSFER_IMPORTS], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_registry_names_every_familys_four_parts():
  for name, family in registry.FAMILIES.items():
    assert family.name == name
    assert os.path.isfile(os.path.join(REPO, family.config))
    for module in (family.models, family.train):
      assert not module and name == "patn" or os.path.isfile(os.path.join(REPO, *module.split(".")) + ".py"), module
    if family.train:
      train_src = open(os.path.join(REPO, *family.train.split(".")) + ".py").read()
      assert "def train_and_evaluate(" in train_src and "def benchmark_workload(" in train_src
    assert family.inference_class().family == name
  try:
    registry.FAMILIES["patn"].train_module()
  except errors.ConfigError as e:
    assert "no trainer" in str(e) and "init.pose_branch_checkpoint" in str(e)
  else:
    raise AssertionError("no error for training an inference-only family")
  try:
    registry.get("nosuch")
  except registry.UnknownFamilyError as e:
    assert "config.model_name='nosuch'" in str(e) and "'diaf', 'drn', 'drn_face', 'hpn', 'patn'" in str(e)
  else:
    raise AssertionError("no error for an unknown family")

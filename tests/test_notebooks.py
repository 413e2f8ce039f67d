"""The notebooks (notebooks/*.ipynb) run top to bottom, and the helpers they use.

Both notebooks execute with nbclient in one kernel each, in one temporary folder, with
``HPT_JAX_NOTEBOOK_CI=1`` (their parameters cell then picks the ``:tiny`` presets, 2 evaluation
pairs, no FID, and skips the Colab install cell: CI installs from the checkout). Any cell error
fails the test. ``train_and_compare.ipynb`` runs first and trains DRN and HPN (one level; DIAF
only outside CI); ``demo.ipynb``
then restores its DRN run through ``HPT_JAX_NOTEBOOK_CHECKPOINT`` (the "restore a checkpoint" path;
its training path is the same :func:`hpt_jax.notebook.train` that the first notebook runs) and must
write and show the result image, the GIF and the evaluation table. The pose estimator's models must
be fetched (``python launch/fetch_models.py``); otherwise the notebook tests skip.
"""

import json
import os
import re
import tarfile

import numpy as np
import pytest

from hpt_jax import errors, notebook, pose
from hpt_jax.metrics import pose_estimator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
MODELS_PRESENT = all(os.path.isfile(os.path.join(pose_estimator.default_model_dir(), m))
                     for m in (pose_estimator.LANDMARK_MODEL, pose_estimator.DETECTOR_MODEL))


def _read(name):
  import nbformat
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def _execute(name, cwd, **env):
  from nbclient import NotebookClient
  nb = _read(name)
  client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
  client.execute(env={**os.environ, "HPT_JAX_NOTEBOOK_CI": "1", **env})
  return nb


def _outputs(nb, mime):
  """The ``mime`` payloads of every output of every code cell, in order."""
  return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if mime in o.get("data", {})]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  if not MODELS_PRESENT:
    pytest.skip(f"MediaPipe models absent: run `{pose_estimator.FETCH_COMMAND}`")
  work = tmp_path_factory.mktemp("notebooks")
  compare = _execute("train_and_compare.ipynb", work)
  demo = _execute("demo.ipynb", work, HPT_JAX_NOTEBOOK_CHECKPOINT=os.path.join("runs", "deepfashion_drn_tiny"))
  return work, compare, demo


def test_train_and_compare_trains_plots_and_compares_every_family(executed):
  work, nb, _ = executed
  for run in ("deepfashion_drn_tiny", "deepfashion_hpn_tiny"):      # CI leaves DIAF out (its 3 compiles)
    assert os.path.isfile(os.path.join(work, "runs", run, "summary.json")), run
  tables = [t for t in _outputs(nb, "text/markdown") if "source copied" in t]
  assert len(tables) == 1
  assert all(f"| {family}: " in tables[0] for family in ("drn", "hpn")), tables[0]
  # live plots (one per family, updated in place), one scalar figure per family, the image grid
  assert len(_outputs(nb, "image/png")) >= 5


def test_demo_writes_and_shows_the_result_the_gif_and_the_table(executed):
  work, _, nb = executed
  out = os.path.join(work, "demo_out")
  from PIL import Image
  with Image.open(os.path.join(out, "result.png")) as im:
    assert im.size == (176, 256)
  with Image.open(os.path.join(out, "animation_panel.gif")) as gif:
    assert gif.n_frames == 3 and gif.size == (3 * 176, 256)      # 2 key poses and back, source|target|result
  assert os.path.getsize(os.path.join(out, "animation.mp4")) > 0
  assert len(_outputs(nb, "image/gif")) == 1
  assert len(_outputs(nb, "image/png")) >= 3                        # photo + pose, gallery, result panel
  tables = [t for t in _outputs(nb, "text/markdown") if "source copied" in t]
  assert len(tables) == 1 and "ground truth" in tables[0]
  assert json.load(open(os.path.join(out, "eval", "metrics.json")))["num_pairs"] == 2


def test_notebooks_are_committed_without_outputs_and_name_one_repository():
  readme = open(os.path.join(REPO, "README.md")).read()
  badge = re.findall(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^/]+/notebooks/(\w+)\.ipynb",
                     readme)
  assert {name for _, name in badge} == {"demo", "train_and_compare"}
  for name in ("demo.ipynb", "train_and_compare.ipynb"):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), name
    assert "parameters" in code[0].metadata.get("tags", []), name
    urls = re.findall(r'REPO_URL = "https://github\.com/([^"]+)"', code[0].source)
    assert urls and {repo for repo, _ in badge} == set(urls), (name, urls, badge)


def test_interpolate_poses_moves_present_joints_linearly():
  a = np.zeros((18, 2), np.float32)
  b = np.full((18, 2), 4.0, np.float32)
  b[3] = -1                                        # missing at the end: missing in between
  c = np.full((18, 2), 8.0, np.float32)
  seq = pose.interpolate_poses(np.stack([a, b, c]), 4)
  assert seq.shape == (9, 18, 2) and seq.dtype == np.float32
  np.testing.assert_array_equal(seq[:, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8])
  np.testing.assert_array_equal(seq[:, 3, 0], [0, -1, -1, -1, -1, -1, -1, -1, 8])
  np.testing.assert_array_equal(pose.interpolate_poses(np.stack([a, c]), 1), np.stack([a, c]))
  with pytest.raises(ValueError, match="steps"):
    pose.interpolate_poses(np.stack([a, c]), 0)
  with pytest.raises(ValueError, match=r"\[K, 18, 2\]"):
    pose.interpolate_poses(a, 2)


def test_fetch_checkpoint_from_a_folder_an_archive_and_a_url(tmp_path):
  model = tmp_path / "exported" / "drn_model"
  (model / "variables").mkdir(parents=True)
  (model / "inference.json").write_text("{}")
  assert notebook.fetch_checkpoint(str(tmp_path / "exported")) == str(model)
  archive = tmp_path / "drn_model.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(model, arcname="drn_model")
  dest = tmp_path / "downloads"
  got = notebook.fetch_checkpoint(archive.as_uri(), str(dest))
  assert got == str(dest / "drn_model" / "drn_model") and os.path.isfile(os.path.join(got, "inference.json"))
  assert notebook.fetch_checkpoint(archive.as_uri(), str(dest)) == got          # reused, not downloaded again
  with pytest.raises(errors.MissingFileError, match="no such file"):
    notebook.fetch_checkpoint(str(tmp_path / "absent"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.MissingFileError, match="holds no run"):
    notebook.fetch_checkpoint(str(tmp_path / "empty"))


def test_loss_tags_pick_totals_and_l1_of_every_stage():
  tags = ["coarse/l1", "coarse/perceptual", "refined/total", "grad_norm/detail", "lr", "level_32x24/l1",
          "flow/epe", "disc/appearance"]
  assert notebook.loss_tags(tags) == ["coarse/l1", "flow/epe", "level_32x24/l1", "refined/total"]
  assert notebook.loss_tags(["a", "b"]) == ["a", "b"]

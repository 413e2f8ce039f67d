"""Port equivalence with the reference PyTorch code, and the import of PATN weights.

The fixtures (``tests/data/patn_reference/``, made by ``tests/data/make_patn_reference.py`` with
torch, not run here) hold three reference modules at reduced width (ngf 2, 2 PAT blocks) with
seeded weights, their state dicts and their outputs on fixed inputs:

* PATN ``PATNetwork`` (tengteng95/Pose-Transfer @ 281ee2d ``models/model_variants.py``) in the
  DeepFashion setting (instance norm, transposed-conv up path, one-pixel heatmaps; legacy-format
  file with PyTorch 0.3's InstanceNorm running statistics) and the Market-1501 setting (batch norm
  with running statistics, 32×16, Gaussian heatmaps; legacy format);
* RATE-Net's ``PATNetwork_v2`` (Lotayou/Pose-Transfer @ 164c91b, branch ``rate_net``,
  ``models/model_variants_v2.py``): 3 down-samplings, bilinear up path, both outputs; zip format.

Our Flax modules, filled by the importer's mapping, must reproduce the reference outputs to float32
tolerance ``ATOL`` (measured max |Δ| on CPU, jitted: 2.6e-6, 1.3e-7 and 6.6e-6 on the images of
PATN DeepFashion, PATN Market-1501 and RATE-Net; 2.4e-6 on the RATE-Net feature map, whose values
reach 3.7).
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from hpt_jax import pose, torch_checkpoint
from hpt_jax.models import patn

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "patn_reference")
#: Max |Δ| allowed between our outputs and the reference's (float32, values in [-1, 1] / up to ~4).
ATOL = 2e-5


@pytest.fixture(scope="module")
def reference():
  with np.load(os.path.join(DATA, "reference_io.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  return json.loads(str(arrays.pop("meta"))), arrays


def _model_config(spec) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      ngf=spec["ngf"], n_downsampling=spec["n_downsampling"], n_blocks=spec["n_blocks"], activation="relu",
      dropout=0.5, remat=False, norm=spec["norm"],
      upsampling="bilinear" if spec["class"] == "PATNetwork_v2" else "transposed"))


def test_fixtures_record_their_upstream(reference):
  meta, _ = reference
  assert meta["patn"]["commit"] == "281ee2d3f9381299220989207dcfb4217298d8f5"
  assert meta["rate_net"]["commit"] == "164c91b055f43faf695e3246c83761507d442161"
  assert {m["format"] for m in meta["modules"].values()} == {"zip", "legacy"}


@pytest.mark.parametrize("name", ["patn_deepfashion", "patn_market1501", "rate_net_pose_branch"])
def test_equals_reference_module(reference, name):
  meta, ref = reference
  spec = meta["modules"][name]
  path = os.path.join(DATA, spec["file"])
  assert torch_checkpoint.checkpoint_format(path) == spec["format"]
  config = _model_config(spec)
  h, w = spec["image_size"]
  variables, dropped = patn.convert_state_dict(torch_checkpoint.read_tensors(path), config, (h, w))
  if name == "patn_deepfashion":
    # PyTorch 0.3's InstanceNorm statistics: 2 per norm layer (2 streams × 3, 2 blocks × 3, 2 up).
    assert len(dropped) == 2 * (6 + 6 + 2) and all("InstanceNorm" in r for r in dropped.values())
  else:
    assert dropped == {}
  if spec["norm"] == "batch":
    assert "batch_stats" in variables

  # Our heatmap encodings reproduce the reference inputs from the keypoints.
  for side in ("source", "target"):
    maps = pose.keypoints_to_heatmaps(ref[f"{name}/{side}_keypoints"], h, w, 6.0, spec["pose_encoding"])
    np.testing.assert_allclose(maps, ref[f"{name}/{side}_pose"], atol=1e-6)

  model = patn.build_model(config)
  apply = jax.jit(lambda v, image, source, target: model.apply(v, image, source, target, True))
  feature, image = apply(variables, ref[f"{name}/source_image"], ref[f"{name}/source_pose"],
                         ref[f"{name}/target_pose"])
  expected = ref[f"{name}/image"]
  assert np.ptp(expected) > 0.5                       # a non-trivial output
  np.testing.assert_allclose(np.asarray(image), expected, atol=ATOL, rtol=0)
  if f"{name}/feature" in ref:
    np.testing.assert_allclose(np.asarray(feature), ref[f"{name}/feature"], atol=ATOL, rtol=0)
  out = jax.jit(lambda v, b: patn.generate(model, v, b))(
      variables, {k: ref[f"{name}/{k}"] for k in ("source_image", "source_pose", "target_pose")})
  np.testing.assert_allclose(np.asarray(out["image"]), np.asarray(image), atol=ATOL, rtol=0)


def test_mismatch_lists_every_unmatched_missing_and_misshaped_key(reference):
  meta, _ = reference
  spec = meta["modules"]["patn_deepfashion"]
  tensors = torch_checkpoint.read_tensors(os.path.join(DATA, spec["file"]))
  tensors["model.extra.weight"] = np.zeros(3, np.float32)
  del tensors["model.stream1_up.7.bias"]
  tensors["model.att.1.conv_block_stream2.1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(patn.WeightMismatchError) as e:
    patn.convert_state_dict(tensors, _model_config(spec), tuple(spec["image_size"]))
  msg = str(e.value)
  assert "1 unmatched key(s): model.extra.weight" in msg
  assert "model.att.1.conv_block_stream2.1.weight (8, 8, 3, 3)" in msg and "network has (3, 3, 16, 16)" in msg
  assert "missing from the file: params/conv_out/conv/bias" in msg
  # The wrong family setting (bilinear instead of transposed) is caught by name, with the fields to set.
  wrong = _model_config(spec)
  wrong.upsampling = "bilinear"
  with pytest.raises(patn.WeightMismatchError, match="model.upsampling='bilinear'"):
    patn.convert_state_dict(torch_checkpoint.read_tensors(os.path.join(DATA, spec["file"])), wrong,
                            tuple(spec["image_size"]))


def test_batch_norm_step_counter_and_dataparallel_prefix(reference):
  meta, _ = reference
  spec = meta["modules"]["patn_market1501"]
  tensors = torch_checkpoint.read_tensors(os.path.join(DATA, spec["file"]))
  renamed = {"module." + k: v for k, v in tensors.items()}
  renamed["module.model.stream1_down.2.num_batches_tracked"] = np.array(7, np.int64)
  a, dropped = patn.convert_state_dict(renamed, _model_config(spec), tuple(spec["image_size"]))
  b, _ = patn.convert_state_dict(tensors, _model_config(spec), tuple(spec["image_size"]))
  assert list(dropped) == ["module.model.stream1_down.2.num_batches_tracked"]
  np.testing.assert_array_equal(a["batch_stats"]["up_1_norm"]["var"], b["batch_stats"]["up_1_norm"]["var"])
  np.testing.assert_array_equal(a["batch_stats"]["up_1_norm"]["var"],
                                tensors["model.stream1_up.4.running_var"])


# ------------------------------------------------------------------ import → evaluate / transfer
def _import(tmp_path, reference, name, config_module):
  from hpt_jax.commands import import_checkpoint
  meta, _ = reference
  spec = meta["modules"][name]
  config = config_module.get_config("")                   # the released size: the importer reads ngf/blocks
  config.data.image_size = config.eval_data.image_size = tuple(spec["image_size"])
  lines = []
  result = import_checkpoint.import_patn(config, os.path.join(DATA, spec["file"]), str(tmp_path / name),
                                         log=lines.append)
  return result, lines


def test_legacy_deepfashion_checkpoint_imports_and_transfers(reference, tmp_path):
  from hpt_jax import inference, transfer
  from hpt_jax.configs import deepfashion_patn
  from hpt_jax.data import DEEPFASHION_SAMPLE
  from hpt_jax.input_pipeline import patn_format

  _, ref = reference
  name = "patn_deepfashion"
  result, lines = _import(tmp_path, reference, name, deepfashion_patn)
  assert result["changed"] == {"model.ngf": (64, 2), "model.n_blocks": (9, 2)}
  assert any("28 × InstanceNorm running statistic" in ln for ln in lines), lines

  model = inference.load(None, str(tmp_path / name))       # the exported layout, its own config
  assert isinstance(model, inference.PATNModel) and model.config.pose.encoding == "one_pixel"
  assert model.source["format"] == "legacy" and model.source["torch_checkpoint"].endswith(f"{name}.pth")
  # The exported model reproduces the reference module's output (model frame).
  out = model.forward({k: ref[f"{name}/{k}"] for k in ("source_image", "source_pose", "target_pose")})
  np.testing.assert_allclose(np.asarray(out["image"]), ref[f"{name}/image"], atol=ATOL, rtol=0)

  # Transfer on a sample photo with keypoint files; the stored frame equals generate().
  annotations = patn_format.read_annotations(os.path.join(DEEPFASHION_SAMPLE, "annotation.csv"))
  src, tgt = sorted(annotations)[:2]
  files = []
  for n in (src, tgt):
    p = tmp_path / f"{os.path.splitext(n)[0]}.csv"
    kp = annotations[n]
    p.write_text(f"name:keypoints_y:keypoints_x\n{n}: {json.dumps([int(v) for v in kp[:, 0]])}: "
                 f"{json.dumps([int(v) for v in kp[:, 1]])}\n")
    files.append(str(p))
  moved = transfer.transfer(model, os.path.join(DEEPFASHION_SAMPLE, "img", src), files[1], source_keypoints=files[0],
                            retarget_pose=False)
  direct = model.generate(moved.source_image, moved.source_keypoints, moved.target_keypoints[0])
  np.testing.assert_array_equal(moved.images[0], direct["image"])
  assert moved.images[0].shape == (256, 176, 3)


def test_legacy_market_checkpoint_imports_and_evaluates(reference, tmp_path):
  from hpt_jax import evaluation, inference
  from hpt_jax.configs import market1501_patn

  _, ref = reference
  name = "patn_market1501"
  result, _ = _import(tmp_path, reference, name, market1501_patn)
  assert result["dropped"] == {}
  model = inference.load(None, str(tmp_path / name))
  assert set(model.variables["pose_branch"]) == {"params", "batch_stats"}
  out = model.forward({k: ref[f"{name}/{k}"] for k in ("source_image", "source_pose", "target_pose")})
  np.testing.assert_allclose(np.asarray(out["image"]), ref[f"{name}/image"], atol=ATOL, rtol=0)
  # Evaluate on two pairs of the vendored Market-1501 sample (no pose estimator / Inception).
  scored = evaluation.evaluate(model.config, str(tmp_path / name), max_pairs=2, batch_size=2, pckh=False, fid=False,
                               retrieval=False, faces=False)
  assert scored["num_pairs"] == 2 and "model (PATN generator)" in evaluation.markdown_table(scored)
  assert scored["model_name"] == "patn"


def test_cli_errors_are_one_line(reference, tmp_path):
  import subprocess
  import sys

  meta, _ = reference
  launcher = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "import_checkpoint.py")
  path = os.path.join(DATA, meta["modules"]["rate_net_pose_branch"]["file"])
  proc = subprocess.run([sys.executable, launcher, "--family=patn", "--config=market1501_patn",
                         f"--torch_checkpoint={path}", f"--workdir={tmp_path / 'x'}", "--config.data.image_size=32,17"],
                        capture_output=True, text=True, timeout=300)
  err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert err[-1].startswith("error: data.image_size=(32, 17) must be divisible by 2**model.n_downsampling=8"), err[-1]


def test_drn_pose_branch_starts_from_imported_weights(reference, tmp_path):
  import jax

  from hpt_jax import errors
  from hpt_jax.configs import deepfashion_drn, deepfashion_patn
  from hpt_jax.models import drn
  from hpt_jax.train import drn as drn_train

  meta, _ = reference
  name = "patn_deepfashion"
  spec = meta["modules"][name]
  _import(tmp_path, reference, name, deepfashion_patn)
  expected, _ = patn.convert_state_dict(torch_checkpoint.read_tensors(os.path.join(DATA, spec["file"])),
                                        _model_config(spec), tuple(spec["image_size"]))
  config = deepfashion_drn.get_config("tiny")
  config.model.update(dict(ngf=2, n_blocks=2, n_downsampling=2, upsampling="transposed", activation="relu"))
  config.init.pose_branch_checkpoint = str(tmp_path / name)

  def target(model_config):
    model = drn.build_models(model_config)["pose_branch"]
    inputs = drn.init_inputs(model_config, "pose_branch", (32, 24))
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))["params"]

  params = drn_train.load_pose_branch(config.init.pose_branch_checkpoint, config, target(config.model))
  flat = jax.tree_util.tree_leaves_with_path(params)
  assert len(flat) == len(jax.tree_util.tree_leaves(expected["params"]))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), expected["params"])
  # Another G_P size: one line naming the imported model's fields.
  config.model.ngf = 4
  with pytest.raises(errors.ConfigError, match=r"set --config.model.ngf=2, --config.model.n_downsampling=2"):
    drn_train.load_pose_branch(config.init.pose_branch_checkpoint, config, target(config.model))


def test_one_pixel_encoding_rounds_and_drops_joints_outside():
  kp = np.full((18, 2), -1.0, np.float32)
  kp[0] = [3, 4]          # integer: exactly where PATN's uint8 Gaussian is 1
  kp[1] = [2.6, 0.4]      # fractional (a resized frame): the nearest pixel
  kp[2] = [100, 3]        # outside the image: nothing, as PATN's maps
  maps = pose.keypoints_to_heatmaps(kp, 8, 6, 6.0, "one_pixel")
  assert maps.shape == (8, 6, 18) and maps.dtype == np.float32
  assert maps[3, 4, 0] == 1 and maps[3, 0, 1] == 1
  np.testing.assert_array_equal(maps.sum(axis=(0, 1)), [1, 1] + [0] * 16)
  uint8_gaussian = pose.keypoints_to_heatmaps(kp, 8, 6, 6.0).astype(np.uint8)   # PATN stores uint8
  np.testing.assert_array_equal(uint8_gaussian[..., 0], maps[..., 0])
  with pytest.raises(ValueError, match="unknown pose encoding"):
    pose.keypoints_to_heatmaps(kp, 8, 6, 6.0, "disk")


def test_zip_rate_net_pose_branch_imports_with_its_fields_read_from_the_file(reference, tmp_path):
  from hpt_jax import inference
  from hpt_jax.configs import deepfashion_patn

  _, ref = reference
  name = "rate_net_pose_branch"
  result, _ = _import(tmp_path, reference, name, deepfashion_patn)
  assert result["changed"] == {"model.ngf": (64, 2), "model.n_downsampling": (2, 3), "model.n_blocks": (9, 2),
                               "model.upsampling": ("transposed", "bilinear")}
  model = inference.load(None, str(tmp_path / name))
  assert model.source["format"] == "zip"
  out = model.forward({k: ref[f"{name}/{k}"] for k in ("source_image", "source_pose", "target_pose")})
  np.testing.assert_allclose(np.asarray(out["image"]), ref[f"{name}/image"], atol=ATOL, rtol=0)

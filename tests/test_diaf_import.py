"""DIAF's port equivalence with the reference PyTorch code, and the import of DIAF's weights.

The fixtures (``tests/data/diaf_reference/``, made by ``tests/data/make_diaf_reference.py`` with
torch, not run here) hold the three reference networks of ly015/intrinsic_flow @ 94ea8f0
(``models/networks.py``: ``FlowUnet``, ``DualUnetGenerator`` with shared down-sampling
convolutions, ``UnetGenerator_MultiOutput``) at reduced width (nf 4) on 32×16 inputs, with seeded
weights (legacy-format state dicts, as the 2019 release), their outputs in eval mode (running
statistics ≙ ``model.bn_mode='running'``) and train mode (batch statistics ≙ ``'reference'``),
and the reference's end-to-end ``PoseTransferModel.forward`` chain (flow module in eval mode,
generator and pixel-warp net in train mode).

Our Flax modules, filled by the importer's mapping, must reproduce them to float32 tolerance:
measured max |Δ| on CPU (running / reference mode): flow module 2.1e-6 / 2.2e-5 on the flow in
pixels (values up to ≈ 25), 1.0e-7 / 1.2e-6 on the visibility logits; generator 2.1e-6 / 5.6e-6;
pixel-warp mask 1.4e-6 / 6.9e-7.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from hpt_jax import errors, torch_checkpoint
from hpt_jax.models import diaf

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "diaf_reference")
NETWORKS = ("flow", "generator", "pixel_warp")
#: Max |Δ| allowed: images, masks, logits and flows in units of 20 px (values up to ≈ 3).
ATOL = 2e-5
#: … and the full-resolution flow in pixels (the same numbers ×20).
ATOL_PIXELS = 2e-4


@pytest.fixture(scope="module")
def reference():
  with np.load(os.path.join(DATA, "reference_io.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  return json.loads(str(arrays.pop("meta"))), arrays


def _config(bn_mode="reference") -> ml_collections.ConfigDict:
  """The fixture's network fields (tests/data/make_diaf_reference.py) on market1501_diaf:tiny (32×16)."""
  from hpt_jax.configs import market1501_diaf
  config = market1501_diaf.get_config("tiny")
  config.flow_model.update(dict(nf=4, max_nf=16, n_levels=3))
  config.loss.flow_scale_weights = (0.32, 0.16, 0.08)
  config.model.update(dict(nf=4, max_nf=8, n_scales=3, n_warp_scales=2, n_res_blocks=2, share_downsample=True,
                           bn_mode=bn_mode))
  config.pixel_warp_model.update(dict(nf=4, max_nf=8, n_scales=3))
  return config


@pytest.fixture(scope="module")
def converted():
  models = diaf.build_models(_config())
  return {n: diaf.convert_state_dict(torch_checkpoint.read_tensors(os.path.join(DATA, f"{n}.pth")), n, models,
                                     (32, 16)) for n in NETWORKS}


def _apply(network, variables, mode, *args):
  module = diaf.build_models(_config(mode))[network]
  if network == "flow":     # the flow module's own BN mode is train=True/False
    if mode == "reference":
      return jax.jit(lambda v, *a: module.apply(v, *a, train=True, mutable=["batch_stats"])[0])(variables, *args)
    return jax.jit(lambda v, *a: module.apply(v, *a, train=False))(variables, *args)
  return jax.jit(lambda v, *a: diaf.apply_frozen(module, v, *a))(variables, *args)


def test_fixtures_record_their_upstream(reference):
  meta, ref = reference
  assert meta["repository"].endswith("ly015/intrinsic_flow") and meta["commit"].startswith("94ea8f0")
  assert meta["generator"]["shared_downsample"] and ref["source_image"].shape == (3, 32, 16, 3)
  for n in NETWORKS:
    assert torch_checkpoint.checkpoint_format(os.path.join(DATA, f"{n}.pth")) == "legacy"


@pytest.mark.parametrize("mode", ["running", "reference"])
def test_flow_module_equals_reference(reference, converted, mode):
  _, ref = reference
  variables, dropped = converted["flow"]
  assert set(dropped.values()) == {"batch-norm step counter (unused at inference)"}
  out = _apply("flow", variables, mode, ref["source_pose"], ref["target_pose"])
  np.testing.assert_allclose(np.asarray(out["flow"]), ref[f"flow/{mode}/flow"], atol=ATOL_PIXELS, rtol=0)
  np.testing.assert_allclose(np.asarray(out["vis_logits"]), ref[f"flow/{mode}/vis_logits"], atol=ATOL, rtol=0)
  for s, level in enumerate(out["flow_pyramid"]):
    np.testing.assert_allclose(np.asarray(level), ref[f"flow/{mode}/pyramid_{s}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["running", "reference"])
def test_generator_and_pixel_warp_net_equal_reference(reference, converted, mode):
  _, ref = reference
  image = _apply("generator", converted["generator"][0], mode, ref["source_image"], ref["target_pose"],
                 ref["gen_flow"], ref["gen_vis"])
  np.testing.assert_allclose(np.asarray(image), ref[f"generator/{mode}/image"], atol=ATOL, rtol=0)
  mask = _apply("pixel_warp", converted["pixel_warp"][0], mode, ref["pw_generated"], ref["pw_warped"],
                ref["gen_flow"], ref["gen_vis"])
  np.testing.assert_allclose(np.asarray(mask), ref[f"pixel_warp/{mode}/mask"], atol=ATOL, rtol=0)
  # The two modes really differ (else the test could not tell them apart).
  other = "running" if mode == "reference" else "reference"
  assert np.abs(ref[f"generator/{mode}/image"] - ref[f"generator/{other}/image"]).max() > 0.05


def test_shared_downsampling_maps_one_tensor_to_both_encoders(converted):
  tensors = torch_checkpoint.read_tensors(os.path.join(DATA, "generator.pth"))
  np.testing.assert_array_equal(tensors["enca_1_downsample.1.weight"], tensors["encp_1_downsample.1.weight"])
  params = converted["generator"][0]["params"]
  assert "encp_1_down" in params and "enca_1_down" not in params
  # With separate convolutions the importer fills both from the same tensors.
  separate = diaf.build_models(ml_collections.ConfigDict({**_config().to_dict(), "model": {
      **_config().model.to_dict(), "share_downsample": False}}))
  variables, _ = diaf.convert_state_dict(tensors, "generator", separate, (32, 16))
  np.testing.assert_array_equal(variables["params"]["enca_1_down"]["kernel"], variables["params"]["encp_1_down"]["kernel"])


def test_pose_transfer_chain_equals_reference_forward(reference, converted):
  """diaf.generate with bn_mode='reference' = the reference PoseTransferModel.forward end to end."""
  _, ref = reference
  models = diaf.build_models(_config("reference"))
  nets = {n: converted[n][0] for n in NETWORKS}
  batch = {k: ref[k] for k in ("source_image", "source_pose", "target_pose")}
  out = jax.jit(lambda v, b: diaf.generate(models, v, b))(nets, batch)
  np.testing.assert_array_equal(np.asarray(out["vis"]), ref["chain/vis"])
  np.testing.assert_allclose(np.asarray(out["flow"]), ref["chain/flow"], atol=ATOL_PIXELS, rtol=0)
  for ours, theirs in (("warped", "warped"), ("generated", "generated"), ("mask", "mask"), ("final", "final")):
    np.testing.assert_allclose(np.asarray(out[ours]), ref[f"chain/{theirs}"], atol=ATOL, rtol=0, err_msg=ours)


# ------------------------------------------------------------------ import → evaluate / transfer
def _import(tmp_path, networks, name="diaf"):
  from hpt_jax.commands import import_checkpoint
  from hpt_jax.configs import market1501_diaf
  config = market1501_diaf.get_config("tiny")          # 32×16; the importer reads the widths and levels
  lines = []
  files = [os.path.join(DATA, f"{n}.pth") for n in networks]
  result = import_checkpoint.import_diaf(config, files, str(tmp_path / name), log=lines.append)
  return result, lines


def test_checkpoints_import_then_evaluate_and_transfer(reference, tmp_path):
  from hpt_jax import evaluation, inference

  _, ref = reference
  result, lines = _import(tmp_path, ["pixel_warp", "flow", "generator"])   # any order
  assert result["networks"] == NETWORKS
  assert "model.bn_mode" not in result["changed"]                          # the default: 'reference'
  assert result["changed"]["flow_model.n_levels"] == (2, 3) and result["changed"]["model.n_scales"] == (2, 3)
  assert "model.share_downsample" not in result["changed"]                 # True, read from the file
  assert any("model.max_nf: 8" in ln or "model.n_res_blocks: 1 -> 2" in ln for ln in lines), lines
  model = inference.load(None, str(tmp_path / "diaf"))                     # its own config
  assert isinstance(model, inference.DIAFModel) and model.networks == NETWORKS
  assert model.config.model.bn_mode == "reference"
  out = model.forward({k: ref[k] for k in ("source_image", "source_pose", "target_pose")})
  np.testing.assert_allclose(np.asarray(out["image"]), ref["chain/final"], atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(out["before_pixel_warp"]), ref["chain/generated"], atol=ATOL, rtol=0)
  # Evaluate on two pairs of the vendored Market-1501 sample (no pose estimator / Inception).
  scored = evaluation.evaluate(model.config, str(tmp_path / "diaf"), model=model, max_pairs=2, pckh=False, fid=False,
                               retrieval=False, faces=False)
  assert scored["num_pairs"] == 2 and scored["model_name"] == "diaf"
  # Transfer one sample pair in the stored frame.
  from PIL import Image
  from hpt_jax.data import MARKET1501_SAMPLE
  from hpt_jax.input_pipeline import patn_format
  annotations = patn_format.read_annotations(os.path.join(MARKET1501_SAMPLE, "annotation.csv"))
  src, tgt = sorted(annotations)[:2]
  image = np.asarray(Image.open(os.path.join(MARKET1501_SAMPLE, "img", src)).convert("RGB"))
  moved = model.generate(image, annotations[src], annotations[tgt])
  assert moved["image"].shape == (128, 64, 3) and np.isfinite(moved["image"]).all()


def test_pose_transfer_checkpoint_without_pixel_warping(tmp_path):
  """Flow + generator files (PoseTransfer_*0.4): the generator's output is the image. Its values
  are the chain's ``generated`` (checked above); here the exported layout and its rows."""
  from hpt_jax import inference
  result, _ = _import(tmp_path, ["generator", "flow"])
  assert result["networks"] == ("flow", "generator") and "pixel_warp_model.n_scales" not in result["changed"]
  model = inference.load(None, str(tmp_path / "diaf"))
  assert model.networks == ("flow", "generator") and model.config.model.bn_mode == "reference"
  assert [r for r, _ in model.image_rows()] == ["image", "warped_source"]


def test_import_errors(tmp_path):
  from hpt_jax.commands import import_checkpoint
  from hpt_jax.configs import deepfashion_drn
  flow = os.path.join(DATA, "flow.pth")
  with pytest.raises(errors.ConfigError, match="needs the flow module's file"):
    _import(tmp_path, ["generator"])
  with pytest.raises(errors.ConfigError, match="netPW\\) needs the generator"):
    _import(tmp_path, ["flow", "pixel_warp"])
  with pytest.raises(errors.ConfigError, match="both hold the DIAF flow network"):
    _import(tmp_path, ["flow", "flow"])
  with pytest.raises(errors.ConfigError, match="needs a diaf config"):
    import_checkpoint.import_diaf(deepfashion_drn.get_config("tiny"), [flow], str(tmp_path / "x"))
  with pytest.raises(errors.ConfigError, match="FlowUnet_v2"):
    import_checkpoint.identify_diaf_network({"pre_conv.0.weight": 0, "pred_vis.1.weight": 0})
  tensors = torch_checkpoint.read_tensors(os.path.join(DATA, "generator.pth"))
  no_vis = {k: v for k, v in tensors.items() if "_vis_" not in k}
  with pytest.raises(errors.ConfigError, match="vis_mode='residual'"):
    import_checkpoint.infer_diaf_fields("generator", no_vis)
  # Separate down-sampling tensors are read as share_downsample=False.
  separate = dict(tensors)
  separate["enca_0_downsample.1.weight"] = tensors["enca_0_downsample.1.weight"] + 1
  assert import_checkpoint.infer_diaf_fields("generator", separate)["model.share_downsample"] is False
  assert import_checkpoint.infer_diaf_fields("generator", tensors) == {
      "model.nf": 4, "model.n_scales": 3, "model.n_warp_scales": 2, "model.n_res_blocks": 2, "model.max_nf": 8,
      "model.share_downsample": True}
  # A state dict that does not fit lists the keys.
  from hpt_jax.models import patn
  models = diaf.build_models(_config())
  broken = {k: v for k, v in tensors.items() if k != "dec_fuse.0.weight"}
  with pytest.raises(patn.WeightMismatchError, match="missing from the file: params/bottleneck/kernel"):
    diaf.convert_state_dict(broken, "generator", models, (32, 16))


def test_bn_mode_is_checked():
  from hpt_jax.configs import deepfashion_diaf
  from hpt_jax.input_pipeline import diaf_pipeline
  config = deepfashion_diaf.get_config("tiny")
  assert config.model.bn_mode == "reference" and config.model.share_downsample      # the reference's
  config.model.bn_mode = "eval"
  with pytest.raises(errors.ConfigError, match="model.bn_mode='eval'"):
    diaf_pipeline.validate_config(config)

"""DIAF on Market-1501 (128×64): the reference's Market setting.

Paper: Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019,
arXiv:1903.11326 (§4: Market-1501 at 128×64). Reference code ly015/intrinsic_flow @ 94ea8f0: the
``auto_set()`` of ``options/flow_regression_options.py`` and ``options/pose_transfer_options.py``
for ``--dataset_name market`` sets ``image_size=[128, 64]``, ``joint_radius=4``, flow
``num_scale=4``, generator ``G_n_scale=5``, ``G_n_warp_scale=4`` (the pixel-warp net takes
``G_n_scale`` too) — everything else is ``deepfashion_diaf``'s. Import the authors' Market weights
(``FlowReg_m*``, ``PoseTransfer_m0.4``/``m0.5``) with
``launch/import_checkpoint.py --family=diaf --config=market1501_diaf`` (docs/diaf.md).

Differences from ``deepfashion_diaf``:

* data: the vendored Market-1501 sample (:data:`hpt_jax.data.MARKET1501_SAMPLE`; identity-disjoint
  ``pairs_train.csv``/``pairs_eval.csv``, research-only licence), stored and seen at 128×64, no
  white padding (``data.pad_to_width=0``).
* ``pose.disk_radius=4``, ``flow_targets.limb_radius=8`` (half the 256-pixel-high DeepFashion
  frame's, as the disks).
* ``flow_model.n_levels=4``, ``model.n_scales=5``, ``model.n_warp_scales=4``,
  ``pixel_warp_model.n_scales=5`` (4×2 bottleneck).
* No 2-D shift augmentation of the flow pairs (the reference: ±5 px), as on DeepFashion.

Presets (``--config=market1501_diaf:PRESET``):

* *(none)* — the reference's Market sizes (widths as on DeepFashion), batch 8; the step counts are
  ``deepfashion_diaf``'s (set ``phases.*.total_steps`` for the full Market training set).
* ``cpu`` — real-sample run on 2 CPU cores: 128×64, flow nf 8 (4 levels), generator and pixel-warp
  nets nf 8 (cap 32), ndf 16, batch 4, VGG taps to relu3_1; 600 flow / 200 generator (GAN from
  100) / 100 pixel-warp steps, the rates of ``deepfashion_diaf:cpu``.
* ``tiny`` — tests: 32×16, widths 4, flow 2 levels, 2 scales, one residual block, batch 2, 2
  steps per phase.
"""

from hpt_jax.configs import deepfashion_diaf
from hpt_jax.data import MARKET1501_SAMPLE as _SAMPLE

#: Presets and what they are; shown by ``--help``.
PRESETS = {
    "": "the reference's Market-1501 setting: 128×64, flow 4 levels, generator 5 scales (4 warped), batch 8",
    "cpu": "2 CPU cores: 128×64, widths 8, 600 flow / 200 generator / 100 pixel-warp steps, batch 4",
    "tiny": "tests: 32×16, widths 4, 2 steps per phase, batch 2",
}

#: Training FLOPs per pair are not measured for this config (the CPU-backend warning then stays silent).
FLOPS_PER_PAIR: dict = {}


def get_config(preset: str | None = None):
  """Returns the DIAF Market-1501 config: ``deepfashion_diaf``'s with the differences above;
  ``preset`` is '', 'cpu' or 'tiny'.

  Raises:
    ValueError: an unknown preset.
  """
  preset = preset or ""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for market1501_diaf; expected '', 'cpu' or 'tiny'")
  config = deepfashion_diaf.get_config(preset)
  size = (32, 16) if preset == "tiny" else (128, 64)
  for block, pairs in (("data", "pairs_train.csv"), ("eval_data", "pairs_eval.csv")):
    old = config[block]
    new = deepfashion_diaf.data_block(pairs, _SAMPLE, stored_size=(128, 64), image_size=size, pad_to_width=0)
    new.flip = old.flip
    new.tfds_name = "market1501_pose_transfer"
    config[block] = new
  if preset == "tiny":
    return config                    # deepfashion_diaf:tiny's networks fit 32×16 (flow 2 levels: 8 | 16)
  config.pose.disk_radius = 4.0      # reference auto_set: joint_radius = 4
  config.flow_targets.limb_radius = 8.0
  config.flow_model.n_levels = 4     # reference auto_set: num_scale = 4
  config.model.n_scales = 5          # reference auto_set: G_n_scale = 5
  config.model.n_warp_scales = 4     # reference auto_set: G_n_warp_scale = 4
  config.pixel_warp_model.n_scales = 5
  config.loss.flow_scale_weights = (0.32, 0.16, 0.08, 0.04)
  return config

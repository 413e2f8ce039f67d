"""PATN's released Market-1501 generator (inference only; the ``patn`` family), 128×64.

Paper: Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation", CVPR 2019,
arXiv:1904.03349. Reference code and weights: tengteng95/Pose-Transfer @ 281ee2d (README "Test the
model", Market1501: ``--which_model_netG PATN --norm batch``; 9 PAT blocks, 2 down-samplings,
ngf 64). Import and score:

    python launch/import_checkpoint.py --family=patn --config=market1501_patn \\
        --torch_checkpoint=market_PATN/latest_net_netG.pth --workdir=runs/patn_market
    python launch/evaluate.py --workdir=runs/patn_market

Differences from ``deepfashion_patn``:

* ``model.norm='batch'``: batch norm (affine, running statistics; inference only) and convs without
  bias, as ``--norm batch`` builds them.
* 128×64 images (``data.stored_size``, ``data.image_size``).
* ``pose.encoding='gaussian'`` with σ=6: PATN's ``tool/generate_pose_map_market.py`` stores float32
  Gaussians (unlike the DeepFashion tool's uint8 maps).

Presets: *(none)* — the released model's size; ``tiny`` — tests: ngf 2, 2 PAT blocks, 32×16 (the
reference fixture's size).

The data default to the vendored Market-1501 sample (:data:`hpt_jax.data.MARKET1501_SAMPLE`,
identity-disjoint ``pairs_train.csv``/``pairs_eval.csv``; research-only licence).
"""

from hpt_jax.configs import deepfashion_patn
from hpt_jax.data import MARKET1501_SAMPLE as _SAMPLE

#: Presets and what they are; shown by ``--help``.
PRESETS = {
    "": "PATN's released Market-1501 generator: 128×64, batch norm, ngf 64, 9 PAT blocks",
    "tiny": "tests: 32×16, ngf 2, 2 PAT blocks (the reference fixture's size)",
}


def get_config(preset: str | None = None):
  """Returns the PATN Market-1501 config: ``deepfashion_patn``'s with the differences above;
  ``preset`` is '' or 'tiny'.

  Raises:
    ValueError: an unknown preset.
  """
  preset = preset or ""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for market1501_patn; expected '' or 'tiny'")
  config = deepfashion_patn.get_config(preset)
  config.data = deepfashion_patn.data_block("pairs_train.csv", _SAMPLE, (128, 64))
  config.eval_data = deepfashion_patn.data_block("pairs_eval.csv", _SAMPLE, (128, 64))
  config.pose.encoding = "gaussian"
  config.model.norm = "batch"        # --norm batch
  if preset == "tiny":
    for d in (config.data, config.eval_data):
      d.image_size = (32, 16)
  return config

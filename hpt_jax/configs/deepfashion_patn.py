"""PATN's released DeepFashion generator (inference only; the ``patn`` family), 256×176.

Paper: Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation", CVPR 2019,
arXiv:1904.03349. Reference code and weights: tengteng95/Pose-Transfer @ 281ee2d (README "Test the
model": ``--which_model_netG PATN --norm instance``; ``models/networks.py`` ``define_G`` builds 9
PAT blocks, ``--G_n_downsampling`` 2 by default, ``--ngf`` 64). ``launch/import_checkpoint.py``
reads the authors' ``latest_net_netG.pth`` into this network:

    python launch/import_checkpoint.py --family=patn --config=deepfashion_patn \\
        --torch_checkpoint=fashion_PATN/latest_net_netG.pth --workdir=runs/patn_deepfashion
    python launch/evaluate.py --workdir=runs/patn_deepfashion

Where the model differs from our DRN defaults (each a config field):

* ``model.activation='relu'`` (the reference code), ``model.n_downsampling=2``,
  ``model.upsampling='transposed'`` (PATN's ``ConvTranspose2d`` up path; RATE-Net's
  ``PATNetwork_v2`` is ``'bilinear'``), ``model.norm='instance'``.
* ``pose.encoding='one_pixel'``: PATN's DeepFashion heatmaps were stored as uint8, so each joint is
  one pixel (``tool/generate_pose_map_fashion.py``; :func:`hpt_jax.pose.keypoints_to_heatmaps`).
  The released generator was trained on those; Gaussian maps would be out of distribution.
* The family has no trainer; fine-tune the weights as DRN's pose branch
  (``--config=deepfashion_drn --config.init.pose_branch_checkpoint=DIR`` with the same model fields).

Presets: *(none)* — the released model's size; ``tiny`` — tests: ngf 2, 2 PAT blocks, 32×24 (the
reference fixtures of ``tests/data/make_patn_reference.py``).

The data default to the vendored DeepFashion sample (:data:`hpt_jax.data.DEEPFASHION_SAMPLE`,
research-only licence); point ``eval_data.*`` at the full test set to score the released model
(``docs/evaluation.md``, "Scoring the authors' checkpoints").
"""

import os

import ml_collections

from hpt_jax.data import DEEPFASHION_SAMPLE as _SAMPLE

#: Presets and what they are; shown by ``--help``.
PRESETS = {
    "": "PATN's released DeepFashion generator: 256×176, ngf 64, 9 PAT blocks, 2 down-samplings",
    "tiny": "tests: 32×24, ngf 2, 2 PAT blocks (the reference fixtures' size)",
}


def data_block(pairs: str, sample: str = _SAMPLE, size: tuple[int, int] = (256, 176)) -> ml_collections.ConfigDict:
  """A ``data``/``eval_data`` block: the PATN-format ``sample`` folder's ``pairs`` list, images stored
  and seen at ``size`` (H, W) pixels (``market1501_patn`` uses it with its own sample and 128×64)."""
  return ml_collections.ConfigDict(dict(
      images=os.path.join(sample, "img"),
      annotations=os.path.join(sample, "annotation.csv"),
      pairs=os.path.join(sample, pairs),
      stored_size=size,             # (H, W) of the image files.
      image_size=size,              # (H, W) the network sees (PATN: the stored size).
      keypoint_x_offset=0,          # the full release's 256×256 annotations need -40 for the 176 crop.
      skip_bad_examples=False,
      flip=False,
      num_workers=0,
  ))


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the PATN DeepFashion config; ``preset`` is '' or 'tiny'.

  Raises:
    ValueError: an unknown preset.
  """
  config = ml_collections.ConfigDict()
  config.model_name = "patn"
  config.seed = 0
  config.batch_size = 8
  config.dtype = "float32"
  config.data = data_block("pairs_train.csv")
  config.eval_data = data_block("pairs_eval.csv")
  config.pose = ml_collections.ConfigDict(dict(
      sigma=6.0,                     # only used by 'gaussian' (and for evaluation panels)
      encoding="one_pixel",          # PATN's uint8 DeepFashion maps; 'gaussian' for float maps
  ))
  config.model = ml_collections.ConfigDict(dict(
      ngf=64, n_downsampling=2, n_blocks=9,
      activation="relu",             # reference code
      dropout=0.5,                   # in the reference's PAT blocks; off at inference
      remat=False,
      norm="instance",               # --norm instance
      upsampling="transposed",       # PATN's ConvTranspose2d up path ('bilinear' = PATNetwork_v2)
  ))
  preset = preset or ""
  if preset == "":
    pass
  elif preset == "tiny":
    config.batch_size = 2
    for d in (config.data, config.eval_data):
      d.image_size = (32, 24)
    config.model.update(dict(ngf=2, n_blocks=2))
  else:
    raise ValueError(f"unknown preset {preset!r} for deepfashion_patn; expected '' or 'tiny'")
  return config

"""HPN's full schedule: square levels 64² → 128² → 256² → 512² → 1024² (HPN §3.3–3.4).

Paper: Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training", arXiv:2008.11898
(2020); no public code exists.

For users' high-resolution data (e.g. Human3.6M or YouTube frames at 1024², the paper's sets;
point ``data.images``/``data.annotations``/``data.pairs`` and ``eval_data.*`` at them, PATN file
format, keypoints in pixels of the stored images, and set ``data.stored_size``/``eval_data.stored_size``
to their (H, W)). The defaults read the bundled DeepFashion
sample (research-only licence, ``hpt_jax/data/README.md``) so the file runs as is; its 256×176 images are
resized (stretched) to each level's square size, which is only useful as a smoke test.

Levels: 18 local descriptors at 64² and 128², 31 at 256² and 512², 44 at 1024² (§3.4); the local
discriminator replaces the local perceptual loss at 1024² (§3.2). 700k steps per level.

Presets: *(none)* — the paper; ``tiny`` — every level at tiny width (bottleneck 8 channels) with
random VGG truncated to relu1_1, 1 step per level: the test that exercises the 1024² level on
CPU; ``benchmark`` — the paper's widths, used by ``launch/benchmark.py --config=hpn_1024:benchmark``
(one forward/backward step of the 1024² level).
"""

import ml_collections

from hpt_jax.configs import deepfashion_hpn

#: Presets (``--config=hpn_1024:PRESET``) and what they are; shown by ``--help``.
PRESETS = {
    "": "the paper: square levels 64² → 1024², 700k steps per level",
    "tiny": "tests: every level at tiny width, 1 step per level (exercises the 1024² level on CPU)",
    "benchmark": "the paper's widths for launch/benchmark.py (one step of the 1024² level)",
}

#: Training FLOPs per pair of the 1024² level's step by preset, for the CPU-backend warning of
#: ``hpt-train``: ``launch/benchmark.py --config=hpn_1024:benchmark --flops_only`` (docs/performance.md).
FLOPS_PER_PAIR = {"": 3.85e12, "benchmark": 3.85e12}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the 64² → 1024² HPN config; ``preset`` is '', 'tiny' or 'benchmark'.

  Raises:
    ValueError: an unknown preset.
  """
  config = deepfashion_hpn.get_config()
  config.model.base_size = (64, 64)
  config.model.num_levels = 5
  config.local_descriptors = (18, 18, 31, 31, 44)
  config.data.image_size = (1024, 1024)
  config.eval_data.image_size = (1024, 1024)
  config.batch_size = 8

  preset = preset or ""
  if preset == "":
    pass
  elif preset == "tiny":
    config.batch_size = 1
    config.steps_per_level = 1
    config.log_every_steps = 1
    config.checkpoint_every_steps = 1
    config.sample_every_steps = 1
    config.eval_max_pairs = 1
    config.model.bottleneck_channels = 8
    config.model.min_channels = 2
    config.model.ndf = 2
    config.perceptual.taps = ("relu1_1",)
    config.perceptual.random_init = True
    config.loss.local_min_size = 8
  elif preset == "benchmark":
    config.batch_size = 1
    config.perceptual.random_init = True
  else:
    raise ValueError(f"unknown preset {preset!r} for hpt_jax/configs/hpn_1024.py; expected '', 'tiny' or 'benchmark'")
  return config

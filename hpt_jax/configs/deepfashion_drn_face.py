"""DRN's face enhancing module on DeepFashion In-shop face crops (trained separately from the body).

Paper: Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE TIP 2021, arXiv:2005.12494, §IV-A (Eq. 2), §V: face crops resized to 64×64 (bicubic), the
training pairs with a face in both images, the Eq. 7 losses at the body's weights (λ_GAN, λ_per,
λ_recon, λ_sty) = (1, 5, 10, 5), 200 epochs at a fixed learning rate 1e-4 (footnote 1: optimised
separately). Model: :mod:`hpt_jax.models.drn_face`; data: :mod:`hpt_jax.input_pipeline.faces`
(the face cache of ``face_data.cache``; ``launch/prepare_faces.py`` writes one).

Presets (``--config=deepfashion_drn_face:PRESET``):

* *(none)* — the body module's sizes (content encoder nf 64 → 256 channels, style code 128, ndf
  64), batch 8, 200 epochs of the face pairs (``total_epochs``), lr 1e-4 held.
* ``cpu`` — 2 CPU cores: nf 16, style_nf 16, ndf 16, batch 8, 20 epochs (228 cycles), and mirrored
  self-pairs (``face_data.mirrored_self_pairs``: the bundled sample has only 14 training face pairs).
* ``tiny`` — for tests: nf 4, one residual block each, ndf 4, batch 2, 4 steps (crops stay 64×64).

Train: ``python launch/train.py --config=deepfashion_drn_face:cpu --workdir=runs/drn_face_cpu``
(checkpoints in ``checkpoints/drn_face/``). Use it at inference by giving that folder to the
DRN model: ``launch/evaluate.py ... --face_workdir=runs/drn_face_cpu`` (or ``launch/transfer.py``).
"""

import ml_collections

from hpt_jax.configs import deepfashion_drn

PRESETS = {
    "": "the body module's sizes: nf 64, ndf 64, batch 8, 200 epochs at lr 1e-4 (GPU)",
    "cpu": "2 CPU cores: nf 16, ndf 16, batch 8, 20 epochs, mirrored self-pairs added",
    "tiny": "tests: nf 4, batch 2, 4 steps",
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the face-module config; ``preset`` is '', 'cpu' or 'tiny' (module docstring).

  Raises:
    ValueError: an unknown preset.
  """
  preset = preset or ""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for hpt_jax/configs/deepfashion_drn_face.py; "
                     "expected '', 'cpu' or 'tiny'")
  body = deepfashion_drn.get_config("tiny" if preset == "tiny" else "")
  config = ml_collections.ConfigDict()
  config.model_name = "drn_face"
  config.seed = 0
  config.deterministic = False
  config.batch_size = 8
  config.total_epochs = 200          # over the face pairs (DRN §V); total_steps = 0 derives the steps from it
  config.total_steps = 0             # > 0 overrides total_epochs
  config.d_updates = 3               # K, as the body's 1-1-3 cycle (DRN Algorithm 1)
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.sample_every_steps = 500
  config.keep_checkpoints = 3
  config.preemption_grace_s = 25.0
  config.dtype = "float32"

  # The body's data blocks (pairs, images, stored size); data.image_size is unused here.
  config.data = body.data
  config.eval_data = body.eval_data
  config.face_data = ml_collections.ConfigDict(dict(
      cache="",                      # '' = faces.npz next to data.annotations (the sample's is vendored)
      crop_size=64,                  # DRN §V (bicubic)
      box_scale=1.25,                # crop side / landmarks' larger extent (hpt_jax/input_pipeline/faces.py)
      mirrored_self_pairs=False,     # also train (mirrored crop -> the image's own crop) on every frontal train image
  ))

  config.blend = ml_collections.ConfigDict(dict(
      sigma=3.0,                     # σ of g(σ) in M_F = g(σ) * 1[B_F] (Eq. 2), stored-frame pixels (paper: unstated)
  ))

  config.model = ml_collections.ConfigDict(dict(
      nf=64, n_downsampling=2, n_content_resblocks=2,
      style_nf=64, style_dim=128, mlp_dim=256, n_adain_resblocks=2,
      activation="leaky_relu",
      ndf=64, d_downsampling=2, d_blocks=3, d_dropout=0.5,
  ))
  config.loss = body.loss
  config.perceptual = body.perceptual
  config.perceptual.taps = ("relu1_1", "relu2_1", "relu3_1")   # 64×64 crops: up to 16×16 features
  config.optimizer = body.optimizer
  config.optimizer.hold_fraction = 1.0   # DRN §V: the face rate stays fixed at 1e-4

  if preset == "cpu":
    config.total_epochs = 20
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    config.sample_every_steps = 100
    config.face_data.mirrored_self_pairs = True
    config.model.update(dict(nf=16, style_nf=16, ndf=16))
  elif preset == "tiny":
    config.batch_size = 2
    config.total_steps = 4
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.sample_every_steps = 2
    config.model.update(dict(nf=4, n_content_resblocks=1, style_nf=4, style_dim=8, mlp_dim=16, n_adain_resblocks=1,
                             ndf=4, d_blocks=1))
    config.perceptual.taps = ("relu1_1", "relu2_1")
  return config

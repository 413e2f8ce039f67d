"""Detail Replenishing Network (DRN; RATE-Net is its conference version).

Papers: DRN — Yang et al., "Towards Fine-grained Human Pose Transfer with Detail Replenishing Network",
IEEE Transactions on Image Processing 2021, arXiv:2005.12494; RATE-Net — Yang et al.,
"Region-Adaptive Texture Enhancement for Detailed Person Image Synthesis", ICME 2020, arXiv:2005.12486;
PATN — Zhu et al., "Progressive Pose Attention Transfer for Person Image Generation", CVPR 2019,
arXiv:1904.03349.

Two branches (DRN §IV-A, Fig. 3–4; layer sizes from the RATE-Net reference code,
Lotayou/Pose-Transfer @ 164c91b, branch rate_net, ``models/model_variants_v2.py`` and
``models/FUNIT_module/networks.py``, which is precise where the paper is vague):

* :class:`PoseTransferBranch` G_P — PATN's pose-attentional transfer network (``PATNetwork_v2``):
  source image I_s and the two pose heatmaps (P_s, P_t) → guidance map F_t and coarse image Ĩ_c.
* :class:`DetailReplenishingModule` G_T — FUNIT-style generator: a style encoder turns I_s into a
  128-d style code z_s; a 3-layer MLP maps z_s to AdaIN scales and biases; a residual generator
  decodes F_t into the residual map R_t. The refined output is Ĩ_t = Ĩ_c + R_t (Eq. 2 without the
  face module, i.e. RATE-Net).

Paper/code differences, each a config option (``hpt_jax/configs/deepfashion_drn.py``):

* ``activation``: the paper puts LeakyReLU(0.2) after every normalisation layer (§V), the code
  uses ReLU. Default ``'leaky_relu'`` (paper: where paper and code differ, the paper is the default).
* ``n_adain_resblocks``: the paper says the enhancing branch has 6 residual blocks; the code
  has 2 AdaIN residual blocks (the MLP's 4096 outputs = 2 blocks × 2 AdaIN × 1024). Default 2,
  because layer *sizes* follow the reference code (17.7 M parameters in use).
* ``dropout``: the reference runs dropout 0.5 inside the PAT blocks (``--no_dropout`` not
  passed); the paper is silent. Default 0.5 (code).
* ``norm`` / ``upsampling`` (G_P only): ``'instance'`` / ``'bilinear'`` (RATE-Net's
  ``PATNetwork_v2``). PATN's own generator (tengteng95/Pose-Transfer @ 281ee2d,
  ``models/model_variants.py``) has a ``ConvTranspose2d`` up path (``'transposed'``) and, for
  Market-1501, batch norm (``'batch'``, inference only); they load the authors' released weights
  (:mod:`hpt_jax.models.patn`). Equality with both reference modules is tested on fixtures
  (``tests/test_patn_import.py``).

Images are NHWC float in [-1, 1]; heatmaps are [B, H, W, 18] in [0, 1]. ``H`` and ``W`` must be
divisible by ``2**n_downsampling``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpt_jax import errors, layers

Dtype = Any


def _norm_layer(norm: str, dtype: Dtype, deterministic: bool) -> "Callable[[jax.Array, str], jax.Array]":
  """The normalisation after each conv of G_P: ``norm(x, name)``.

  ``'instance'``: PyTorch ``InstanceNorm2d(affine=False)`` (no parameters; PATN's DeepFashion and
  RATE-Net setting). ``'batch'``: ``BatchNorm2d(affine=True)`` in inference mode (running
  statistics, eps 1e-5; variables ``<name>/scale``, ``<name>/bias`` and ``batch_stats``
  ``<name>/mean``, ``<name>/var``), PATN's Market-1501 setting (``--norm batch``, Zhu et al.,
  CVPR 2019; tengteng95/Pose-Transfer @ 281ee2d README.md). Batch norm is inference-only here.

  Raises:
    hpt_jax.errors.ConfigError: an unknown ``norm``, or ``'batch'`` with ``deterministic=False``
      (training with batch norm is not supported).
  """
  if norm == "instance":
    return lambda x, name: layers.instance_norm(x)
  if norm == "batch":
    if not deterministic:
      raise errors.ConfigError("model.norm='batch' is inference-only (imported Market-1501 PATN weights); "
                               "train with model.norm='instance'")
    return lambda x, name: nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, dtype=dtype,
                                        name=name)(x)
  raise errors.ConfigError(f"unknown model.norm {norm!r}; expected 'instance' or 'batch'")


class PATBlock(nn.Module):
  """Pose-attentional transfer block (PATN ``PATBlock``, cated_stream2 for blocks 2–9).

  Image stream: pad→conv3→norm→act→dropout→pad→conv3→norm. Pose stream (input ``d`` channels in
  the first block, ``2d`` after): pad→conv3 (keeps width)→norm→act→dropout→pad→conv3 (→d), no
  final norm. ``att = sigmoid(pose_out)``; ``img_new = img + img_out · att``; the next pose input
  is ``concat(pose_out (pre-sigmoid), img_new)``. With ``norm='batch'`` the convs have no bias
  (PATN ``use_bias = norm is InstanceNorm2d``).
  """

  dim: int
  activation: str = "leaky_relu"
  dropout: float = 0.5
  dtype: Dtype = jnp.float32
  norm: str = "instance"

  @nn.compact
  def __call__(self, img: jax.Array, pose: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """img [B, h, w, d], pose [B, h, w, d or 2d] → (img_new [B, h, w, d], next pose [B, h, w, 2d])."""
    act = layers.get_activation(self.activation)
    norm = _norm_layer(self.norm, self.dtype, deterministic)
    bias = self.norm == "instance"
    conv = lambda f, name: layers.Conv(f, 3, padding=1, use_bias=bias, kernel_init=layers.patn_normal_init,
                                      dtype=self.dtype, name=name)
    x = act(norm(conv(self.dim, "img_conv1")(img), "img_norm1"))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = norm(conv(self.dim, "img_conv2")(x), "img_norm2")

    p = act(norm(conv(pose.shape[-1], "pose_conv1")(pose), "pose_norm1"))
    p = nn.Dropout(self.dropout)(p, deterministic=deterministic)
    p = conv(self.dim, "pose_conv2")(p)

    att = jax.nn.sigmoid(p)
    img_new = img + x * att
    return img_new, jnp.concatenate([p, img_new], axis=-1)


class _DownStream(nn.Module):
  """PATN encoder stream: reflect-pad 3 conv7 → norm → act, then n× [conv3 s2 (zero pad 1) → norm → act]."""

  ngf: int
  n_downsampling: int
  activation: str
  dtype: Dtype
  norm: str = "instance"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    act = layers.get_activation(self.activation)
    norm = _norm_layer(self.norm, self.dtype, deterministic)
    bias = self.norm == "instance"
    x = layers.Conv(self.ngf, 7, padding=3, use_bias=bias, kernel_init=layers.patn_normal_init, dtype=self.dtype,
                    name="conv_in")(x)
    x = act(norm(x, "norm_in"))
    for i in range(self.n_downsampling):
      x = layers.Conv(self.ngf * 2 ** (i + 1), 3, stride=2, padding=1, pad_mode="zero", use_bias=bias,
                      kernel_init=layers.patn_normal_init, dtype=self.dtype, name=f"down_{i}")(x)
      x = act(norm(x, f"down_{i}_norm"))
    return x


class PoseTransferBranch(nn.Module):
  """PATN pose-transfer branch G_P (``PATNetwork_v2``, ``models/model_variants_v2.py``), and PATN's
  own generator (``PATNModel``, tengteng95/Pose-Transfer @ 281ee2d ``models/model_variants.py``)
  with ``upsampling='transposed'``.

  ≈165.2 M parameters at ``ngf=64, n_downsampling=3, n_blocks=9`` (the reference count).
  Kernels are initialised N(0, 0.02) as PATN's ``init_weights``.

  Attributes:
    ngf: base width (64 in the paper).
    n_downsampling: stride-2 convolutions per encoder stream (3 in RATE-Net, 2 in PATN).
    n_blocks: pose-attentional transfer blocks (9).
    activation: after every norm (``'relu'`` in both reference codes).
    dropout: inside the PAT blocks (0.5 in both reference codes; off when ``deterministic``).
    remat: rematerialise each PAT block in the backward pass (``jax.checkpoint``).
    norm: ``'instance'`` (default) or ``'batch'`` (PATN Market-1501, inference only; see
      :func:`_norm_layer`). With ``'batch'`` every conv but the last has no bias.
    upsampling: ``'bilinear'`` (default; RATE-Net's ``PATNetwork_v2``: bilinear ×2
      (align_corners=False) → reflect-pad 1 conv3 → norm → act) or ``'transposed'`` (PATN:
      ``ConvTranspose2d(k=3, s=2, p=1, output_padding=1)`` → norm → act; kernel ``up_<i>/kernel``
      [3, 3, in, out] applied as a forward conv of the 2-dilated input, padding (1, 2), i.e. the
      PyTorch weight [in, out, kh, kw] transposed to [kh, kw, in, out] and flipped spatially).
  """

  ngf: int = 64
  n_downsampling: int = 3
  n_blocks: int = 9
  activation: str = "leaky_relu"
  dropout: float = 0.5
  remat: bool = False
  dtype: Dtype = jnp.float32
  norm: str = "instance"
  upsampling: str = "bilinear"

  @nn.compact
  def __call__(self, source_image: jax.Array, source_pose: jax.Array, target_pose: jax.Array,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """Transfers the source image to the target pose.

    Args:
      source_image: [B, H, W, 3] in [-1, 1].
      source_pose: [B, H, W, 18] heatmaps P_s in [0, 1].
      target_pose: [B, H, W, 18] heatmaps P_t in [0, 1].
      deterministic: disables dropout (evaluation).

    Returns:
      ``(guidance, coarse)``: the guidance map F_t [B, H/2^n, W/2^n, ngf·2^n] (the image stream
      after the last PAT block, in ``dtype``) and the coarse image Ĩ_c [B, H, W, 3] in [-1, 1]
      (float32). PATN's generator returns only the image.

    Raises:
      hpt_jax.errors.ConfigError: an unknown ``norm`` or ``upsampling``; ``norm='batch'`` when
        not ``deterministic``.
    """
    if self.upsampling not in ("bilinear", "transposed"):
      raise errors.ConfigError(f"unknown model.upsampling {self.upsampling!r}; expected 'bilinear' or 'transposed'")
    act = layers.get_activation(self.activation)
    norm = _norm_layer(self.norm, self.dtype, deterministic)
    bias = self.norm == "instance"
    img = _DownStream(self.ngf, self.n_downsampling, self.activation, self.dtype, self.norm,
                      name="image_stream")(source_image.astype(self.dtype), deterministic)
    pose_in = jnp.concatenate([source_pose, target_pose], axis=-1).astype(self.dtype)
    pose = _DownStream(self.ngf, self.n_downsampling, self.activation, self.dtype, self.norm,
                       name="pose_stream")(pose_in, deterministic)
    block_cls = nn.remat(PATBlock, static_argnums=(3,)) if self.remat else PATBlock
    dim = self.ngf * 2 ** self.n_downsampling
    for i in range(self.n_blocks):
      img, pose = block_cls(dim, self.activation, self.dropout, self.dtype, self.norm, name=f"pat_block_{i}")(
          img, pose, deterministic)
    guidance = img

    x = img
    for i in range(self.n_downsampling):
      features = dim // 2 ** (i + 1)
      if self.upsampling == "transposed":
        x = nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), use_bias=bias,
                             kernel_init=layers.patn_normal_init, dtype=self.dtype, name=f"up_{i}")(x)
      else:
        x = layers.upsample(x, "bilinear")
        x = layers.Conv(features, 3, padding=1, use_bias=bias, kernel_init=layers.patn_normal_init,
                        dtype=self.dtype, name=f"up_{i}")(x)
      x = act(norm(x, f"up_{i}_norm"))
    x = layers.Conv(3, 7, padding=3, kernel_init=layers.patn_normal_init, dtype=self.dtype,
                    name="conv_out")(x)
    return guidance, jnp.tanh(x.astype(jnp.float32))


class StyleEncoder(nn.Module):
  """FUNIT ``ClassModelEncoder`` on I_s (``models/FUNIT_module/networks.py``): style code z_s.

  conv7 3→64 ReLU (no norm, reflect pad); two conv4 s2 doubling the width; ``n_downs − 2``
  conv4 s2 keeping it; global average pooling; 1×1 conv → ``style_dim``. This encoder has no
  normalisation, so it keeps ReLU whatever ``activation`` the rest of the network uses.
  """

  nf: int = 64
  n_downs: int = 4
  style_dim: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_image: jax.Array) -> jax.Array:
    """[B, H, W, 3] in [-1, 1] → style code [B, style_dim] (float32)."""
    x = nn.relu(layers.Conv(self.nf, 7, padding=3, dtype=self.dtype, name="conv_in")(
        source_image.astype(self.dtype)))
    nf = self.nf
    for i in range(self.n_downs):
      if i < 2:
        nf *= 2
      x = nn.relu(layers.Conv(nf, 4, stride=2, padding=1, dtype=self.dtype, name=f"down_{i}")(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.style_dim, kernel_init=layers.torch_default_init, name="to_style")(x)


class DetailReplenishingModule(nn.Module):
  """Detail replenishing module G_T (DRN §IV-A Eq. 3–4; FUNIT ``FewShotGen``,
  ``models/FUNIT_module/networks.py``).

  17.7 M parameters at the reference sizes (``feature_dim=512``, 3 up-samplings).

  Attributes:
    feature_dim: channels of the guidance map F_t (ngf·2^n of the pose branch).
    n_upsampling: nearest ×2 up-samplings back to the image size (= the pose branch's n).
    style_nf / style_dim / mlp_dim: style encoder width, style-code length (128), MLP width (256).
    n_adain_resblocks: AdaIN residual blocks (code: 2; paper: 6 — see module docstring).
  """

  feature_dim: int = 512
  n_upsampling: int = 3
  style_nf: int = 64
  style_dim: int = 128
  mlp_dim: int = 256
  n_adain_resblocks: int = 2
  activation: str = "leaky_relu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source_image: jax.Array, guidance: jax.Array) -> jax.Array:
    """Predicts the residual map R_t.

    Args:
      source_image: [B, H, W, 3] in [-1, 1].
      guidance: F_t [B, H/2^n, W/2^n, feature_dim].

    Returns:
      R_t [B, H, W, 3] in [-1, 1] (tanh), float32.
    """
    act = layers.get_activation(self.activation)
    style = StyleEncoder(self.style_nf, 4, self.style_dim, self.dtype, name="style_encoder")(source_image)
    d = self.feature_dim
    n_adain = 2 * self.n_adain_resblocks
    h = nn.relu(nn.Dense(self.mlp_dim, kernel_init=layers.torch_default_init, name="mlp_0")(style))
    h = nn.relu(nn.Dense(self.mlp_dim, kernel_init=layers.torch_default_init, name="mlp_1")(h))
    adain_params = nn.Dense(n_adain * 2 * d, kernel_init=layers.torch_default_init, name="mlp_2")(h)
    # FUNIT's assign_adain_params: per AdaIN layer in module order, first d = bias, next d = weight.
    adain_params = adain_params.reshape(-1, n_adain, 2, d)

    x = guidance.astype(self.dtype)
    for r in range(self.n_adain_resblocks):
      k = 2 * r
      y = layers.Conv(d, 3, padding=1, dtype=self.dtype, name=f"res_{r}_conv1")(x)
      y = act(layers.adain(y, adain_params[:, k, 1], adain_params[:, k, 0]))
      y = layers.Conv(d, 3, padding=1, dtype=self.dtype, name=f"res_{r}_conv2")(y)
      y = layers.adain(y, adain_params[:, k + 1, 1], adain_params[:, k + 1, 0])
      x = x + y
    for i in range(self.n_upsampling):
      x = layers.upsample(x, "nearest")
      x = layers.Conv(d // 2 ** (i + 1), 5, padding=2, dtype=self.dtype, name=f"up_{i}")(x)
      x = act(layers.instance_norm(x))
    x = layers.Conv(3, 7, padding=3, dtype=self.dtype, name="conv_out")(x)
    return jnp.tanh(x.astype(jnp.float32))


class ResnetDiscriminator(nn.Module):
  """PATN ``ResnetDiscriminator`` (``models/networks.py``), used for D_A and D_S.

  reflect-pad 3 conv7 → IN → act; ``n_downsampling`` conv3 s2 (zero pad 1) doubling the width →
  IN → act; ``n_blocks`` residual blocks [pad→conv3→IN→act→dropout→pad→conv3→IN] + skip. No
  1-channel head: the ``ndf·2^n``-channel map is compared with all-ones / all-zeros by LSGAN, as
  the reference does. ≈3.9 M parameters at ``ndf=64``.
  """

  ndf: int = 64
  n_downsampling: int = 2
  n_blocks: int = 3
  activation: str = "leaky_relu"
  dropout: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, condition: jax.Array, deterministic: bool = True) -> jax.Array:
    """Scores ``concat(image, condition)``.

    Args:
      image: [B, H, W, 3] real or generated image in [-1, 1].
      condition: [B, H, W, C] — the source image (D_A, C=3) or the target heatmaps (D_S, C=18).
      deterministic: disables dropout.

    Returns:
      [B, H/2^n, W/2^n, ndf·2^n] unbounded scores (float32).
    """
    act = layers.get_activation(self.activation)
    x = jnp.concatenate([image, condition], axis=-1).astype(self.dtype)
    x = act(layers.instance_norm(layers.Conv(self.ndf, 7, padding=3, dtype=self.dtype, name="conv_in")(x)))
    for i in range(self.n_downsampling):
      x = layers.Conv(self.ndf * 2 ** (i + 1), 3, stride=2, padding=1, pad_mode="zero",
                      dtype=self.dtype, name=f"down_{i}")(x)
      x = act(layers.instance_norm(x))
    dim = self.ndf * 2 ** self.n_downsampling
    for i in range(self.n_blocks):
      y = act(layers.instance_norm(layers.Conv(dim, 3, padding=1, dtype=self.dtype, name=f"res_{i}_conv1")(x)))
      y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
      y = layers.instance_norm(layers.Conv(dim, 3, padding=1, dtype=self.dtype, name=f"res_{i}_conv2")(y))
      x = x + y
    return x.astype(jnp.float32)


def pose_branch(model_config, dtype: Dtype = jnp.float32) -> PoseTransferBranch:
  """G_P from ``config.model`` (``ngf, n_downsampling, n_blocks, activation, dropout, remat`` and
  the optional ``norm`` (default ``'instance'``), ``upsampling`` (default ``'bilinear'``))."""
  m = model_config
  return PoseTransferBranch(m.ngf, m.n_downsampling, m.n_blocks, m.activation, m.dropout, m.remat, dtype,
                            norm=m.get("norm", "instance"), upsampling=m.get("upsampling", "bilinear"))


def build_models(model_config, dtype: Dtype = jnp.float32) -> dict[str, nn.Module]:
  """Builds G_P, G_T, D_A and D_S from ``config.model``.

  Args:
    model_config: ``config.model`` (fields ``ngf, n_downsampling, n_blocks, activation, dropout,
      remat, style_dim, mlp_dim, n_adain_resblocks, ndf, d_downsampling, d_blocks, d_dropout``).
    dtype: computation dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters stay float32.

  Returns:
    ``{'pose_branch', 'detail', 'disc_appearance', 'disc_shape'}`` → module.
  """
  m = model_config
  feature_dim = m.ngf * 2 ** m.n_downsampling
  disc = lambda: ResnetDiscriminator(m.ndf, m.d_downsampling, m.d_blocks, m.activation, m.d_dropout, dtype)
  return {
      "pose_branch": pose_branch(m, dtype),
      "detail": DetailReplenishingModule(feature_dim, m.n_downsampling, m.style_nf, m.style_dim, m.mlp_dim,
                                         m.n_adain_resblocks, m.activation, dtype),
      "disc_appearance": disc(),
      "disc_shape": disc(),
  }


#: The generator networks inference needs (the discriminators are training-only).
GENERATORS = ("pose_branch", "detail")


def generate(models: dict[str, nn.Module], params: dict[str, Any], batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Deterministic DRN inference (dropout off), at the training resolution.

  Args:
    models: :func:`build_models`' dict (only ``pose_branch`` and ``detail`` are used).
    params: ``{'pose_branch': …, 'detail': …}`` (extra networks ignored).
    batch: ``source_image`` float [B, H, W, 3] in [-1, 1], ``source_pose``/``target_pose``
      float [B, H, W, 18] heatmaps in [0, 1].

  Returns:
    ``{'coarse': Ĩ_c, 'residual': R_t, 'refined': Ĩ_t}``, each [B, H, W, 3] float32; coarse and
    residual in [-1, 1], refined = coarse + residual (not clipped, as the reference; DRN §IV-A Eq. 2
    without the face module).
  """
  guidance, coarse = models["pose_branch"].apply(
      {"params": params["pose_branch"]}, batch["source_image"], batch["source_pose"], batch["target_pose"], True)
  residual = models["detail"].apply({"params": params["detail"]}, batch["source_image"], guidance)
  return {"coarse": coarse, "residual": residual, "refined": coarse + residual}


def init_inputs(model_config, name: str, image_shape: tuple[int, int]) -> tuple[jax.Array, ...]:
  """Zero inputs (batch 1) that initialise network ``name`` for ``image_shape`` (H, W) images.

  ``pose_branch``: (image, pose, pose); ``detail``: (image, guidance map of
  ``ngf·2**n_downsampling`` channels at ``H/2**n_downsampling``); ``disc_appearance``: (image,
  image); ``disc_shape``: (image, pose). Images [1, H, W, 3], poses [1, H, W, 18], float32.

  Raises:
    ValueError: H or W not divisible by ``2**n_downsampling`` (names ``data.image_size``), or an
      unknown network name.
  """
  h, w = image_shape
  n = model_config.n_downsampling
  if h % 2 ** n or w % 2 ** n:
    raise errors.ConfigError(f"data.image_size={tuple(image_shape)} must be divisible by 2**model.n_downsampling="
                     f"{2 ** n} (the pose branch down-samples {n} times)")
  img = jnp.zeros((1, h, w, 3), jnp.float32)
  pose = jnp.zeros((1, h, w, 18), jnp.float32)
  guidance = jnp.zeros((1, h // 2 ** n, w // 2 ** n, model_config.ngf * 2 ** n), jnp.float32)
  table = {"pose_branch": (img, pose, pose), "detail": (img, guidance), "disc_appearance": (img, img),
           "disc_shape": (img, pose)}
  if name not in table:
    raise ValueError(f"unknown DRN network {name!r}; expected one of {sorted(table)}")
  return table[name]

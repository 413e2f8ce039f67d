"""The model families and where each one's four parts live: one registry for every launcher.

A *family* (DRN, HPN, DIAF, PATN) is four things in obvious places:

* its Flax modules and pure ``generate`` — ``hpt_jax/models/<family>.py``;
* its pure train step and training driver — ``hpt_jax/train/<family>.py``
  (``train_and_evaluate(config, workdir)``, ``benchmark_workload(config, …)``);
* its inference (restore + generate in the stored frame) — a class in :mod:`hpt_jax.inference`;
* its config — ``hpt_jax/configs/<file>.py`` (``config.model_name`` names the family).

``hpt_jax/commands/{train,evaluate,benchmark}.py`` look the family up here
from ``config.model_name``. Modules are referenced by name and imported on first use, so looking a
family up imports nothing, and only training and the training benchmark load ``hpt_jax.train``
(through :meth:`Family.train_module`).
"""

from __future__ import annotations

import dataclasses
import importlib

from hpt_jax import errors
from types import ModuleType


class UnknownFamilyError(errors.ConfigError):
  """``config.model_name`` names no registered family; the message lists the known ones."""


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family.

  Attributes:
    name: ``config.model_name``.
    title: the paper's system, for messages and tables.
    models: module of its Flax networks and pure ``generate``.
    train: module of its train step and driver (imported only by :meth:`train_module`); empty
      for an inference-only family.
    inference: class name in :mod:`hpt_jax.inference`.
    config: the config file of the published setting, relative to the repository root.
    checkpoints: the training checkpoint folders under ``<workdir>/checkpoints/``.
  """

  name: str
  title: str
  models: str
  train: str
  inference: str
  config: str
  checkpoints: str

  def models_module(self) -> ModuleType:
    """The family's models module (Flax networks, ``generate``)."""
    return importlib.import_module(self.models)

  def train_module(self) -> ModuleType:
    """The family's training module (``train_and_evaluate``, ``benchmark_workload``).

    Raises:
      hpt_jax.errors.ConfigError: an inference-only family (``train`` empty, e.g. ``patn``).
    """
    if not self.train:
      raise errors.ConfigError(f"config.model_name={self.name!r} has no trainer (inference only: import weights "
                               "with launch/import_checkpoint.py; fine-tune them as DRN's pose branch with "
                               "--config=deepfashion_drn --config.init.pose_branch_checkpoint=DIR)")
    return importlib.import_module(self.train)

  def inference_class(self) -> type:
    """The family's :class:`hpt_jax.inference.PoseTransferModel` subclass."""
    return getattr(importlib.import_module("hpt_jax.inference"), self.inference)


FAMILIES: dict[str, Family] = {
    "drn": Family("drn", "DRN / RATE-Net", "hpt_jax.models.drn", "hpt_jax.train.drn", "DRNModel",
                  "hpt_jax/configs/deepfashion_drn.py", "drn/<step>/"),
    "hpn": Family("hpn", "HPN", "hpt_jax.models.hpn", "hpt_jax.train.hpn", "HPNModel",
                  "hpt_jax/configs/deepfashion_hpn.py", "level_<H>x<W>/<step>/ (one per resolution level)"),
    "diaf": Family("diaf", "DIAF", "hpt_jax.models.diaf", "hpt_jax.train.diaf", "DIAFModel",
                   "hpt_jax/configs/deepfashion_diaf.py", "{flow,generator,pixel_warp}/<step>/ (one per phase)"),
    # DRN's face module (DRN §IV-A), trained separately; used through a DRN model (--face_workdir).
    "drn_face": Family("drn_face", "DRN face module", "hpt_jax.models.drn_face", "hpt_jax.train.drn_face",
                       "DRNFaceModule", "hpt_jax/configs/deepfashion_drn_face.py", "drn_face/<step>/"),
    # Inference only (imported weights, launch/import_checkpoint.py); fine-tune as DRN's pose branch.
    "patn": Family("patn", "PATN", "hpt_jax.models.patn", "", "PATNModel",
                   "hpt_jax/configs/deepfashion_patn.py", "none (imported: inference.json + variables/)"),
}


def get(model_name: str) -> Family:
  """The family of ``config.model_name``.

  Raises:
    UnknownFamilyError: no such family (the message names the field and the known values).
  """
  if model_name not in FAMILIES:
    raise UnknownFamilyError(f"config.model_name={model_name!r}: expected one of {sorted(FAMILIES)}")
  return FAMILIES[model_name]

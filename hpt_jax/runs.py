"""Run folders: the ``config.json`` record, config flattening, parameter counts, quiet library logs.

Shared by training, evaluation, inference and the launchers (nothing here imports training code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging


def quiet_library_logs() -> None:
  """Drops INFO lines from Orbax and grain (dozens per checkpoint) from the absl log handler."""
  import logging as std_logging

  def keep(record) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= std_logging.WARNING or not noisy

  logging.get_absl_handler().addFilter(keep)


def _git_commit() -> str:
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          timeout=10).stdout.strip() or "unknown"
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def _versions() -> dict[str, str]:
  out = {"python": sys.version.split()[0]}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "clu", "ml-collections", "numpy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "absent"
  return out


def write_config_json(workdir: str, config) -> str:
  """Writes ``<workdir>/config.json``: the resolved config, git commit, package versions, devices."""
  path = os.path.join(workdir, "config.json")
  payload = {
      "config": json.loads(config.to_json_best_effort()),
      "git_commit": _git_commit(),
      "versions": _versions(),
      "devices": {"count": jax.device_count(), "kind": jax.devices()[0].device_kind,
                  "processes": jax.process_count()},
  }
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return path


def flatten_config(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """Flattens nested mappings (a ConfigDict or its JSON) to ``{'a.b.c': value}``."""
  out = {}
  for k, v in tree.items():
    if hasattr(v, "items"):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def count_params(tree) -> int:
  """Number of scalar parameters in a pytree (arrays or shape structs)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def host_scalars(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  """Fetches a dict of scalar device arrays as Python floats (one transfer)."""
  fetched = jax.device_get(dict(metrics))
  return {k: float(np.asarray(v)) for k, v in fetched.items()}


def read_config_json(workdir: str) -> dict | None:
  """The ``config`` block of ``<workdir>/config.json`` (what training resolved), or None if absent."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f).get("config", {})


def load_config_json(workdir: str):
  """The run's resolved config from ``<workdir>/config.json`` as an ``ml_collections.ConfigDict``
  (tuples come back as lists), or None if the run has no config.json."""
  import ml_collections
  config = read_config_json(workdir)
  return None if config is None else ml_collections.ConfigDict(config)


#: Config fields that must equal the training run's for a checkpoint to mean anything.
MUST_MATCH = ("model.", "flow_model.", "pixel_warp_model.", "data.image_size", "data.pad_to_width", "pose.",
              "model_name")


def config_differences(config, workdir: str) -> list[str]:
  """Differences between ``config`` and the run's ``<workdir>/config.json`` in the fields that fix
  the model (:data:`MUST_MATCH`: ``model.*``, ``data.image_size``, ``pose.*``, …), as
  ``'field: trained X, given Y'``. Empty if they agree or the run has no config.json (then only
  the checkpoint's shape check applies)."""
  trained = read_config_json(workdir)
  if trained is None:
    return []
  trained = flatten_config(trained)
  given = flatten_config(json.loads(config.to_json_best_effort()))
  out = []
  for key in sorted(set(trained) & set(given)):
    if any(key == m or (m.endswith(".") and key.startswith(m)) for m in MUST_MATCH):
      if trained[key] != given[key]:
        out.append(f"{key}: trained {trained[key]!r}, given {given[key]!r}")
  return out

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


# ------------------------------------------------------------------ run summary
#: ``<workdir>/summary.json``: ``{"stages": {stage: record_stage's record}, "eval": {...}}`` — the
#: final training metrics of every stage (all families) and the end-of-training evaluations a
#: trainer adds (DIAF: flow EPE and each phase's image metrics).
SUMMARY_FILE = "summary.json"


def read_summary(workdir: str) -> dict:
  """``<workdir>/summary.json`` as a dict ({} if absent or unreadable)."""
  path = os.path.join(workdir, SUMMARY_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def update_summary(workdir: str, key: str, value: Any) -> str:
  """Sets ``summary[key] = value`` in ``<workdir>/summary.json`` (atomic rewrite, process 0 only)."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if jax.process_index() == 0:
    summary = read_summary(workdir)
    summary[key] = value
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return path


def _workdir_of_stage(stage_dir: str) -> str | None:
  """``<workdir>`` of a stage's checkpoint folder ``<workdir>/checkpoints/<stage>``, else None."""
  parent = os.path.dirname(os.path.abspath(stage_dir))
  return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else None


def record_stage(stage_dir: str, stage: str, *, start_step: int, end_step: int, wall_s: float,
                 final_metrics: Mapping[str, float], first_step_s: float | None = None,
                 first_step_time: float | None = None) -> str | None:
  """Adds one finished training stage (DRN, an HPN level, a DIAF phase) to ``<workdir>/summary.json``.

  Args:
    stage_dir: the stage's checkpoint folder, ``<workdir>/checkpoints/<stage>``.
    stage: its name; start_step/end_step: the steps this process ran (a resumed run starts > 0).
    wall_s: seconds from the stage's first step to its last, compilation included.
    final_metrics: the last step's host scalars.
    first_step_s: seconds of this process's first step of the stage, its compilation included.
    first_step_time: when that step ended (``time.time()``, seconds since the epoch); the
      benchmark's time to first step is this minus the process's start.

  Returns:
    The file's path, or None when ``stage_dir`` is not inside a ``checkpoints`` folder or this is
    not process 0.
  """
  workdir = _workdir_of_stage(stage_dir)
  if workdir is None or jax.process_index() != 0:
    return None
  stages = read_summary(workdir).get("stages", {})
  stages[stage] = {
      "start_step": int(start_step), "end_step": int(end_step), "wall_s": round(float(wall_s), 2),
      "steps_per_s": round((end_step - start_step) / max(wall_s, 1e-9), 4),
      "final_metrics": {k: float(v) for k, v in final_metrics.items()},
      "checkpoint": os.path.join(os.path.abspath(stage_dir), str(int(end_step))),
      "first_step_s": None if first_step_s is None else round(float(first_step_s), 3),
      "first_step_time": first_step_time,
  }
  return update_summary(workdir, "stages", stages)


def _duration(seconds: float) -> str:
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def run_summary(workdir: str, wall_s: float | None = None, max_metrics: int = 8) -> str:
  """A short text summary of a training run: per stage the steps, time and final losses, and
  where the checkpoints, samples, TensorBoard events and ``config.json`` are.

  Reads ``<workdir>/summary.json`` (written by :func:`record_stage`); stages without a record
  there (finished by an older version) are listed from their checkpoint folders.

  Args:
    workdir: the run folder.
    wall_s: this process's total wall time, if known.
    max_metrics: at most this many final metrics per stage (losses first).
  """
  stages = read_summary(workdir).get("stages", {})
  lines = [f"run {workdir}" + (f": {_duration(wall_s)} in this process" if wall_s is not None else "")]
  for name, s in stages.items():
    # totals first, then the other loss terms; gradient norms and the rate last
    metrics = sorted(s["final_metrics"].items(),
                     key=lambda kv: (0 if kv[0].endswith("total") else 2 if kv[0].startswith(("grad_norm", "lr"))
                                     else 1, kv[0]))
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics[:max_metrics])
    more = f" (+{len(metrics) - max_metrics} more)" if len(metrics) > max_metrics else ""
    lines.append(f"  {name}: steps {s['start_step']}→{s['end_step']} in {_duration(s['wall_s'])} "
                 f"({s['steps_per_s']:.3g} steps/s" + (f"; first step {s['first_step_s']:.1f} s with its compilation"
                                                       if s.get("first_step_s") is not None else "")
                 + f"); final {shown}{more}")
    lines.append(f"    checkpoint {s['checkpoint']}")
  ckpt_root = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_root):
    for name in sorted(os.listdir(ckpt_root)):
      if name not in stages and os.path.isdir(os.path.join(ckpt_root, name)):
        steps = sorted(int(d) for d in os.listdir(os.path.join(ckpt_root, name)) if d.isdigit())
        if steps:
          lines.append(f"  {name}: checkpoint {os.path.join(ckpt_root, name, str(steps[-1]))}")
  samples = os.path.join(workdir, "samples")
  if os.path.isdir(samples):
    files = sorted(os.listdir(samples))
    lines.append(f"  samples: {samples} ({len(files)} grids)")
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")] if os.path.isdir(workdir) else []
  if events:
    lines.append(f"  TensorBoard: tensorboard --logdir {workdir} ({len(events)} event files)")
  if os.path.isfile(os.path.join(workdir, "config.json")):
    lines.append(f"  config: {os.path.join(workdir, 'config.json')}")
  return "\n".join(lines)

"""Run folders: the ``config.json`` record, config flattening, parameter counts, quiet library logs.

Shared by training, evaluation, inference and the launchers (nothing here imports training code).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from hpt_jax import errors


def quiet_library_logs() -> None:
  """Drops INFO lines from Orbax and grain (dozens per checkpoint) from the absl log handler."""
  import logging as std_logging

  def keep(record) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= std_logging.WARNING or not noisy

  logging.get_absl_handler().addFilter(keep)


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
  """``git <args>`` in the checkout holding this package; None where it is not a git checkout
  (an installed wheel) or git is missing."""
  if not os.path.exists(os.path.join(_REPO, ".git")):
    return None
  try:
    proc = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout if proc.returncode == 0 else None


def _git_commit() -> str:
  out = _git("rev-parse", "HEAD")
  return out.strip() if out and out.strip() else "unknown"


def _git_dirty() -> bool | None:
  """True if the checkout has uncommitted changes to tracked files (the commit alone does not
  identify the code), False if clean, None outside a git checkout."""
  out = _git("status", "--porcelain", "--untracked-files=no")
  return None if out is None else bool(out.strip())


def _versions() -> dict[str, str]:
  out = {"python": sys.version.split()[0]}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "clu", "ml-collections", "numpy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "absent"
  return out


#: Environment variables and JAX options that change what XLA computes, recorded in config.json.
_COMPILER_ENV = ("XLA_FLAGS", "LIBTPU_INIT_ARGS", "TF_CUDNN_DETERMINISTIC", "XLA_PYTHON_CLIENT_MEM_FRACTION")
_JAX_OPTIONS = ("jax_default_matmul_precision", "jax_enable_x64", "jax_threefry_partitionable",
                "jax_default_prng_impl")
#: Data files identified by content in config.json (``<block>.<field>`` of the config).
DATA_FILE_FIELDS = ("data.annotations", "data.pairs", "eval_data.annotations", "eval_data.pairs")
#: ``<workdir>/config_history.jsonl``: one line per resume whose config or environment differed.
HISTORY_FILE = "config_history.jsonl"


class ResumeMismatchError(errors.ConfigError):
  """A resume with a config whose model-defining fields differ from the run's record."""


def file_digest(path: str) -> dict[str, Any]:
  """``{"sha256": hex, "bytes": n}`` of a file (read in 1 MiB blocks), or ``{"missing": True}``."""
  h = hashlib.sha256()
  n = 0
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
        n += len(block)
  except OSError:
    return {"missing": True}
  return {"sha256": h.hexdigest(), "bytes": n}


def data_files(config) -> dict[str, dict[str, Any]]:
  """The identity of the data the config reads, by content.

  For a folder source: ``{field: {"path", "sha256", "bytes"}}`` of the pairs and annotation files
  (:data:`DATA_FILE_FIELDS`; fields a config lacks are skipped). For a prepared TFDS source
  (``<block>.source == 'tfds'``): ``{"<block>.tfds": {"name", "split", "dir", "path", "sha256",
  "bytes"}}`` with the digest of the newest prepared version's ``dataset_info.json`` (its split
  sizes and file checksums), or ``"missing": True`` when it is not prepared.
  """
  flat = flatten_config(json.loads(config.to_json_best_effort()))
  out = {}
  for field in DATA_FILE_FIELDS:
    block = field.split(".")[0]
    if flat.get(f"{block}.source") == "tfds":
      name = flat.get(f"{block}.tfds_name") or ""
      tfds_dir = flat.get(f"{block}.tfds_dir") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
      infos = sorted(glob.glob(os.path.join(tfds_dir, *name.split("/"), "*", "dataset_info.json")))
      digest = file_digest(infos[-1]) if infos else {"missing": True}
      out[f"{block}.tfds"] = {"name": name, "split": flat.get(f"{block}.split"), "dir": tfds_dir,
                              "path": infos[-1] if infos else None, **digest}
      continue
    path = flat.get(field)
    if isinstance(path, str) and path:
      out[field] = {"path": path, **file_digest(path)}
  return out


def compiler_settings() -> dict[str, Any]:
  """The XLA flags and JAX options in effect: :data:`_COMPILER_ENV` variables (None when unset)
  and :data:`_JAX_OPTIONS` values (``str`` of each)."""
  out: dict[str, Any] = {k: os.environ.get(k) for k in _COMPILER_ENV}
  for name in _JAX_OPTIONS:
    try:
      out[name] = str(getattr(jax.config, name))
    except AttributeError:
      out[name] = None
  return out


def run_record(config, source: Mapping[str, Any] | None = None, devices: bool = True) -> dict[str, Any]:
  """What ``config.json`` holds: the resolved config, where it came from, the code, packages,
  devices, XLA settings and the data files' digests.

  Args:
    config: the resolved config.
    source: how the config was made, e.g. ``{"config": "deepfashion_drn:cpu", "overrides":
      {"total_steps": 12}}`` or ``{"rerun": OLD_WORKDIR}`` (:func:`rerun_config` uses it to restore
      types); None when not known (library calls).
    devices: include the device count and kind (starts the JAX backend; False leaves it unstarted,
      e.g. before ``XLA_FLAGS`` and ``jax.distributed`` are set up).
  """
  record = {
      "config": json.loads(config.to_json_best_effort()),
      "source": dict(source) if source else None,
      "argv": list(sys.argv),
      "git_commit": _git_commit(),
      "git_dirty": _git_dirty(),
      "versions": _versions(),
      "compiler": compiler_settings(),
      "data_files": data_files(config),
  }
  if devices:
    record["devices"] = {"count": jax.device_count(), "kind": jax.devices()[0].device_kind,
                         "processes": jax.process_count()}
  return record


def _must_match(key: str) -> bool:
  return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MUST_MATCH)


def record_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
  """Differences between two :func:`run_record` payloads.

  Returns:
    ``{"model": [...], "config": [...], "environment": [...]}``: ``'field: A → B'`` lines for the
    config fields that fix the model (:data:`MUST_MATCH`), the other config fields (a field present
    on one side only included), and the code, packages, devices, XLA settings and data digests.
  """
  out: dict[str, list[str]] = {"model": [], "config": [], "environment": []}
  a, b = flatten_config(old.get("config", {})), flatten_config(new.get("config", {}))
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if va != vb:
      out["model" if _must_match(key) else "config"].append(f"{key}: {va!r} → {vb!r}")
  for section in ("git_commit", "git_dirty", "versions", "devices", "compiler", "data_files"):
    fa = flatten_config(old[section]) if isinstance(old.get(section), Mapping) else {"": old.get(section)}
    fb = flatten_config(new[section]) if isinstance(new.get(section), Mapping) else {"": new.get(section)}
    if section in old or section in new:
      for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key):
          out["environment"].append(f"{section}{'.' + key if key else ''}: {fa.get(key)!r} → {fb.get(key)!r}")
  return out


def read_record(workdir: str) -> dict | None:
  """The whole ``<workdir>/config.json`` payload, or None if absent."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_config_json(workdir: str, config, source: Mapping[str, Any] | None = None) -> str:
  """Writes ``<workdir>/config.json`` (:func:`run_record`) for a new run, or checks a resume.

  A new run's record is written once (process 0; atomic). On a resume (the file exists) the
  original record is kept and the new one is compared with it (:func:`record_differences`):

  * a field that fixes the model differs (``model.*``, ``data.image_size``, ``pose.*``, …):
    :class:`ResumeMismatchError` naming each field — the checkpoint would not mean the same;
  * other config fields, the code, packages, devices, XLA settings or data digests differ: a
    warning per difference, and one JSON line ``{"time", "differences", "record"}`` appended to
    ``<workdir>/config_history.jsonl``.

  Returns:
    The path of config.json.

  Raises:
    ResumeMismatchError: see above.
  """
  path = os.path.join(workdir, "config.json")
  record = run_record(config, source)
  old = read_record(workdir)
  if old is None:
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
      os.replace(tmp, path)
    return path
  if record["source"] is None:
    record["source"] = old.get("source")
  differences = record_differences(old, record)
  if differences["model"]:
    raise ResumeMismatchError(
        f"{workdir} was trained with another model: " + "; ".join(differences["model"]) +
        f" ({path}). Resume with the run's own config (--rerun={workdir} starts a new run from it) "
        "or train into a new --workdir")
  changed = differences["config"] + differences["environment"]
  if changed:
    for line in changed:
      logging.warning("resuming %s with a difference from its config.json: %s", workdir, line)
    if jax.process_index() == 0:
      entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "differences": changed, "record": record}
      with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
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
    if _must_match(key):
      if trained[key] != given[key]:
        out.append(f"{key}: trained {trained[key]!r}, given {given[key]!r}")
  return out


# ------------------------------------------------------------------ reruns
#: Config fields naming inputs that must exist for a rerun (checked before training starts).
INPUT_PATH_FIELDS = ("data.images", "data.annotations", "data.pairs", "eval_data.images",
                     "eval_data.annotations", "eval_data.pairs")


def _template(source: Mapping[str, Any] | None):
  """The config a run was made from (its ``source.config`` value, e.g. ``deepfashion_drn:cpu``,
  resolved in the *current* install), or None when unknown or no longer loadable."""
  from hpt_jax import configs
  value = (source or {}).get("config")
  if not value:
    return None
  try:
    return configs.get(value)
  except Exception as e:  # noqa: BLE001 - a missing or broken template only loses the type restore
    logging.warning("rerun: cannot load the original config %r (%s); JSON lists stay lists", value, e)
    return None


def _restore(value: Any, default: Any) -> Any:
  """``value`` read from JSON, with the template's tuple types restored (recursively)."""
  if isinstance(default, tuple) and isinstance(value, list):
    return tuple(_restore(v, default[i] if i < len(default) else None) for i, v in enumerate(value))
  return value


def rerun_config(workdir: str):
  """The resolved config of an earlier run, for a new run that repeats it exactly.

  The ``config`` block of ``<workdir>/config.json`` is poured into the config the run was made
  from (its recorded ``source``, loaded from the current install), so every field keeps its type
  (JSON turns tuples into lists). Differences are warned about:
  recorded fields the current code no longer has (dropped), fields the code added since (their
  defaults are used), and the code, packages, devices, XLA settings and data-file digests that
  differ from the record.

  Args:
    workdir: the earlier run folder (with ``config.json``).

  Returns:
    ``(config, warnings)``: an ``ml_collections.ConfigDict`` and the list of warning lines (also
    logged).

  Raises:
    hpt_jax.errors.MissingFileError: no ``config.json`` in ``workdir``, or an input file or folder
      the config names (:data:`INPUT_PATH_FIELDS`) no longer exists (the field is named).
  """
  import ml_collections
  old = read_record(workdir)
  if old is None:
    raise errors.MissingFileError(f"--rerun={workdir}: no config.json there (not a run folder)")
  recorded = old.get("config", {})
  template = _template(old.get("source"))
  warnings: list[str] = []
  if template is None:
    config = ml_collections.ConfigDict(recorded)
  else:
    config = template
    flat_template = flatten_config(template)
    flat_recorded = flatten_config(recorded)
    for key in sorted(set(flat_recorded) - set(flat_template)):
      warnings.append(f"{key}: recorded as {flat_recorded[key]!r}, but the current code has no such field; dropped")
    config.update_from_flattened_dict({key: _restore(value, flat_template[key])
                                       for key, value in flat_recorded.items() if key in flat_template})
    for key in sorted(set(flat_template) - set(flat_recorded)):
      warnings.append(f"{key}: added to the code since the run; its default {flat_template[key]!r} is used")
  flat = flatten_config(config)
  for field in INPUT_PATH_FIELDS:
    path = flat.get(field)
    if isinstance(path, str) and path and not os.path.exists(path):
      raise errors.MissingFileError(f"--rerun={workdir}: {field} = {path} no longer exists; train with "
                                    f"--config=... --config.{field}=NEW_PATH instead")
  now = run_record(config, devices=False)     # the backend must not start before XLA_FLAGS are set
  warnings += record_differences({k: v for k, v in old.items() if k != "devices"}, now)["environment"]
  for line in warnings:
    logging.warning("rerun of %s: %s", workdir, line)
  return config, warnings


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


#: TensorBoard scalars that measure time, not the computation (left out of :func:`event_scalars`).
TIMING_TAGS = ("steps_per_sec", "uptime", "seconds", "_time", "time_")


def _scalar(event) -> float | None:
  """The value of a scalar TensorBoard tensor event, or None for non-scalars (images, hparams)."""
  from tensorboard.util import tensor_util
  value = np.asarray(tensor_util.make_ndarray(event.tensor_proto))
  return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype.kind == "f" else None


def event_scalars(workdir: str, timing: bool = False) -> dict[str, list[tuple[int, float]]]:
  """The scalars of a run's TensorBoard event files (``DIR/events.out.tfevents.*``, written by
  training when TensorFlow is installed), e.g. for plots or bit-for-bit comparisons of two runs.

  Readable while the run is still writing (a half-written last record is left out).

  Args:
    workdir: the run folder (a missing folder or one without event files gives ``{}``).
    timing: also the scalars that measure time, not the computation (:data:`TIMING_TAGS`:
      ``steps_per_sec``, ``uptime``, ...).

  Returns:
    ``{tag: [(step, value), ...]}`` in the order written (float values; image and other non-scalar
    tags left out).

  Raises:
    hpt_jax.errors.MissingDependencyError: the ``tensorboard`` package is missing (names the extra).
  """
  try:
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError as e:
    raise errors.missing_extra("reading TensorBoard event files", "tensorboard", e) from e
  out: dict[str, list[tuple[int, float]]] = {}
  names = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []
  for name in names:
    if not name.startswith("events.out.tfevents"):
      continue
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, name), size_guidance={"tensors": 0})
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
      if not timing and any(t in tag for t in TIMING_TAGS):
        continue
      values = [(e.step, _scalar(e)) for e in acc.Tensors(tag)]
      if any(v is not None for _, v in values):
        out.setdefault(tag, []).extend(values)
  return out

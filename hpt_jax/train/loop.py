"""The training loop every model shares: device mesh, checkpoints, writers, progress, NaN guard.

Parallelism: one 1-D mesh ``('data',)`` over every device of every process
(``jax.make_mesh``). The train state is replicated (``NamedSharding(mesh, P())``), each batch is
split along its leading axis (``P('data')``), and the step is a plain ``jax.jit`` — the compiler
inserts the gradient all-reduce, so the same code runs on 1 CPU, 8 GPUs or a TPU pod
(``jax.pmap`` is in maintenance mode since JAX 0.8). Multi-host: call
:func:`maybe_initialize_distributed` first; each process feeds only its own shard of the global
batch (``jax.make_array_from_process_local_data``).

Checkpoints: one Orbax ``CheckpointManager`` per stage folder (``<workdir>/checkpoints/<stage>/``)
holding the train state and the grain iterator state; Orbax writes to a temporary folder and
renames it when complete, so an interrupted save never replaces a good checkpoint.

Nothing here imports TensorFlow except :func:`create_writer`, which falls back to a logging-only
writer when TensorFlow is missing (e.g. on GPU machines without it).
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
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

DATA_AXIS = "data"


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the message names the metric and the step."""


def quiet_library_logs() -> None:
  """Drops INFO lines from Orbax and grain (dozens per checkpoint) from the absl log handler."""
  import logging as std_logging

  def keep(record) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= std_logging.WARNING or not noisy

  logging.get_absl_handler().addFilter(keep)


# ------------------------------------------------------------------ devices
def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` when a multi-process environment is detected.

  Detected through the variables JAX's own cluster auto-detection uses (``JAX_COORDINATOR_ADDRESS``,
  SLURM, Cloud TPU pods set their own). Single-process runs do nothing.
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis ``'data'`` over ``devices`` (default: every device of every process).

  The axis is ``AxisType.Auto``: the compiler propagates shardings (``jax.make_mesh`` defaults to
  ``Explicit`` axes in JAX ≥ 0.9, under which Flax's dropout ``select`` rejects mixed shardings).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh's ``'data'`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def per_process_batch_size(global_batch: int, mesh) -> int:
  """The batch each process feeds. Raises ValueError naming ``batch_size`` if it does not divide."""
  n_dev = mesh.devices.size
  if global_batch % n_dev:
    raise ValueError(f"batch_size={global_batch} (global) must be divisible by the {n_dev} devices of the mesh")
  return global_batch // jax.process_count()


def shard_batch(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Turns this process's part of a global batch into global arrays split over ``'data'``.

  Args:
    batch: ``name → [B_local, ...]`` NumPy arrays (the process-local shard).
    mesh: the data mesh.

  Returns:
    ``name → [B_global, ...]`` jax arrays sharded along axis 0.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


# -------------------------------------------------------------- checkpoints
class StageCheckpointer:
  """Orbax checkpoints of one training stage (``<workdir>/checkpoints/<stage>/<step>/``).

  Each checkpoint holds ``state`` (any pytree of arrays, restored with the shardings of the
  abstract target) and, when given, ``data_iter`` (the grain iterator's state).

  Args:
    directory: the stage folder; created if missing.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter=None) -> None:
    """Saves ``state`` (and the iterator state) at ``step``; blocks until it is on disk."""
    import grain  # local: grain is only needed where data iterators are checkpointed
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, abstract_state: Any, data_iter=None, step: int | None = None):
    """Restores the checkpoint at ``step`` (default: latest) into the abstract target.

    Args:
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` with shardings (``jax.eval_shape`` +
        shardings), or concrete arrays whose shardings are used.
      data_iter: a grain iterator whose state is set in place, or None.
      step: which checkpoint; None = latest.

    Returns:
      The restored state.

    Raises:
      FileNotFoundError: no checkpoint in the folder (names it).
      ValueError: the checkpoint does not match the model (e.g. another config's widths); the
        message names the folder and Orbax's reason.
    """
    import grain
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"checkpoint {self.directory}/{step} does not match this config's model: {e}") from e
    return restored["state"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# ------------------------------------------------------------------ writers
class _LoggingOnlyWriter:
  """Fallback metric writer (no TensorFlow): scalars to the log, images dropped."""

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in sorted(scalars.items())))

  def write_images(self, step, images):
    del step, images

  def write_hparams(self, hparams):
    logging.info("hparams: %s", hparams)

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str):
  """clu's default writer (TensorBoard events in ``workdir`` + log lines) on process 0.

  Falls back to a logging-only writer, with a warning, where TensorFlow is not installed.
  """
  try:
    import tensorflow as tf  # noqa: F401  (clu's writers need it)
    tf.config.set_visible_devices([], "GPU")
    from clu import metric_writers
  except ImportError as e:
    logging.warning("TensorBoard writer unavailable (%s): logging scalars only", e)
    return _LoggingOnlyWriter()
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)


def create_progress(total_steps: int, writer):
  """clu ``ReportProgress`` (steps/s, ETA) if clu's periodic actions import, else None."""
  try:
    from clu import periodic_actions
  except ImportError:
    return None
  return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_secs=30)


# ------------------------------------------------------------------ helpers
def check_finite(metrics: Mapping[str, Any], step: int) -> None:
  """Raises :class:`NonFiniteLossError` naming every non-finite metric at ``step``."""
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise NonFiniteLossError(f"non-finite value in {', '.join(sorted(bad))} at step {step}; "
                             "the run stops, the last good checkpoint is kept")


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


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[..., 3] float in [-1, 1] → uint8 in [0, 255] (values outside are clipped)."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pose_to_rgb(heatmaps: np.ndarray) -> np.ndarray:
  """[..., H, W, 18] heatmaps in [0, 1] → [..., H, W, 3] image in [-1, 1]: each joint a fixed hue."""
  n = heatmaps.shape[-1]
  hues = np.linspace(0, 1, n, endpoint=False)
  colors = np.stack([np.abs(hues * 6 - 3) - 1, 2 - np.abs(hues * 6 - 2), 2 - np.abs(hues * 6 - 4)], -1)
  colors = np.clip(colors, 0, 1)
  rgb = np.clip(np.einsum("...j,jc->...c", np.asarray(heatmaps, np.float32), colors), 0, 1)
  return rgb * 2 - 1


def image_grid(columns: list[np.ndarray]) -> np.ndarray:
  """Tiles columns of [B, H, W, 3] images in [-1, 1] into one uint8 [B·H, n·W, 3] grid (rows = examples)."""
  rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(columns[0].shape[0])]
  return to_uint8(np.concatenate(rows, axis=0))


def save_png(path: str, image_uint8: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] image atomically (temporary file + rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(image_uint8).save(tmp)
  os.replace(tmp, path)


def abstract_like(tree, sharding):
  """``jax.ShapeDtypeStruct`` pytree of ``tree`` (arrays or shape structs) carrying ``sharding``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def flatten_config(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """Flattens nested mappings (a ConfigDict or its JSON) to ``{'a.b.c': value}``."""
  out = {}
  for k, v in tree.items():
    if hasattr(v, "items"):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading axis to ``n`` by repeating the last element (a short last eval batch keeps
  the compiled batch shape; callers drop the padded results)."""
  x = np.asarray(x)
  if len(x) == n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)], axis=0)


def count_params(tree) -> int:
  """Number of scalar parameters in a pytree (arrays or shape structs)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def host_scalars(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  """Fetches a dict of scalar device arrays as Python floats (one transfer)."""
  fetched = jax.device_get(dict(metrics))
  return {k: float(np.asarray(v)) for k, v in fetched.items()}


# -------------------------------------------------------------- the step loop
def run_steps(state: Any, step_fn, next_batch, *, total_steps: int, ckpt: "StageCheckpointer",
              data_iter, writer, log_every: int, checkpoint_every: int, sample_every: int = 0,
              sample_fn=None, eval_every: int = 0, eval_fn=None, step_offset: int = 0,
              prefix: str = "") -> tuple[Any, dict[str, float]]:
  """The training loop every model shares: steps, logging, samples, eval, checkpoints, Ctrl-C.

  Runs ``state, metrics = step_fn(state, next_batch())`` from ``int(state.step)`` until
  ``total_steps``. After each step: the metrics are fetched and checked (:func:`check_finite`), the
  progress report is updated; every ``log_every`` steps the scalars are written, every
  ``sample_every`` steps ``sample_fn(step, state)`` → ``{tag: uint8 [H, W, 3] grid}`` is written as
  images, every ``eval_every`` steps ``eval_fn(state)`` → ``{tag: float}`` as scalars, and every
  ``checkpoint_every`` steps the state and ``data_iter`` are saved. The last step does all of
  them (for the callbacks that are given). A ``KeyboardInterrupt`` between steps saves the state
  reached, then propagates. TensorBoard steps are ``step_offset + step`` and tags get ``prefix``.

  Args:
    state: a train-state pytree with an int ``step`` field (steps already completed).
    step_fn: jitted ``(state, batch) -> (state, metrics)``; the state may be donated.
    next_batch: ``() -> batch`` (device arrays, already sharded).
    total_steps: stop after this step.
    ckpt: the stage's :class:`StageCheckpointer`; data_iter: the grain iterator saved with it.
    writer: a clu metric writer (:func:`create_writer`).
    log_every, checkpoint_every, sample_every, eval_every: periods in steps (0 = only the last
      step for logging/checkpoints; callbacks that are None never run).

  Returns:
    ``(state, scalars)``: the final state and the last step's host scalars ({} if no step ran).

  Raises:
    NonFiniteLossError: a metric became NaN/Inf (the last periodic checkpoint is kept).
  """
  start = step = int(state.step)
  progress = create_progress(total_steps, writer)
  scalars: dict[str, float] = {}

  def due(every: int) -> bool:
    return step == total_steps or (every > 0 and step % every == 0)

  try:
    while step < total_steps:
      state, metrics = step_fn(state, next_batch())
      step += 1
      scalars = host_scalars(metrics)
      check_finite(scalars, step)
      if progress is not None:
        progress(step)
      if due(log_every):
        writer.write_scalars(step_offset + step, {prefix + k: v for k, v in scalars.items()})
      if sample_fn is not None and due(sample_every):
        writer.write_images(step_offset + step, {prefix + k: v[None] for k, v in sample_fn(step, state).items()})
      if eval_fn is not None and due(eval_every):
        writer.write_scalars(step_offset + step, {prefix + k: v for k, v in eval_fn(state).items()})
      if due(checkpoint_every):
        ckpt.save(step, state, data_iter)
      writer.flush()
  except KeyboardInterrupt:
    if int(state.step) > start and ckpt.latest_step() != int(state.step):
      logging.warning("interrupted at step %d: saving a checkpoint before exiting", int(state.step))
      ckpt.save(int(state.step), state, data_iter)
    raise
  return state, scalars

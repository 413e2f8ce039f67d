"""The training step loop every trainer shares: writers, progress, NaN guard, Ctrl-C and SIGTERM saves.

Mesh and sharding live in :mod:`hpt_jax.parallel`, checkpoints in :mod:`hpt_jax.checkpoints`,
image helpers in :mod:`hpt_jax.image_io` and the run record in :mod:`hpt_jax.runs` (shared with
evaluation and inference, which import nothing from ``hpt_jax.train``).

Nothing here imports TensorFlow except :func:`create_writer`, which falls back to a logging-only
writer when TensorFlow is missing (e.g. on GPU machines without it).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging

from hpt_jax import errors, preemption, runs

#: Steps run by this process over all stages: the step id of the multi-process preemption sync
#: point (the same on every process, as all run the same steps in lockstep).
_steps_run = 0


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """A loss became NaN or Inf; the message names the metric and the step."""


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
    logging.warning("TensorBoard writer unavailable (%s): logging scalars only; "
                    "pip install 'hpt-jax[tensorboard]' for TensorBoard events", e)
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


# -------------------------------------------------------------- the step loop
def run_steps(state: Any, step_fn, next_batch, *, total_steps: int, ckpt,
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

  Preemption (:mod:`hpt_jax.preemption`): after every step the loop asks whether to stop — a
  SIGTERM received by this process, or on multi-process runs Orbax's
  ``CheckpointManager.reached_preemption`` (the step every process agreed on) — and if so saves
  the state and ``data_iter`` at that step (unless already saved), logs where it stopped and raises
  :class:`hpt_jax.preemption.Preempted` (exit status 143). It tells :mod:`hpt_jax.preemption`
  whether completed steps are unsaved, so a SIGTERM with nothing to save exits at once.

  Args:
    state: a train-state pytree with an int ``step`` field (steps already completed).
    step_fn: jitted ``(state, batch) -> (state, metrics)``; the state may be donated.
    next_batch: ``() -> batch`` (device arrays, already sharded).
    total_steps: stop after this step.
    ckpt: the stage's :class:`hpt_jax.checkpoints.StageCheckpointer`; data_iter: the grain iterator saved with it.
    writer: a clu metric writer (:func:`create_writer`).
    log_every, checkpoint_every, sample_every, eval_every: periods in steps (0 = only the last
      step for logging/checkpoints; callbacks that are None never run).

  Returns:
    ``(state, scalars)``: the final state and the last step's host scalars ({} if no step ran).

  Raises:
    NonFiniteLossError: a metric became NaN/Inf (the last periodic checkpoint is kept).
    hpt_jax.preemption.Preempted: stopped after SIGTERM, at a saved step.
    hpt_jax.checkpoints.CheckpointSaveError: a checkpoint could not be written (the previous one
      is kept; the run stops rather than train on unsaved).
  """
  global _steps_run
  start = step = int(state.step)
  stage = os.path.basename(ckpt.directory.rstrip("/"))
  progress = create_progress(total_steps, writer)
  scalars: dict[str, float] = {}
  first_calls: dict[str, float] = {}     # name → seconds of its first call (compilation included)
  first_step_done = None                  # wall-clock time.time() when this process's first step ended
  t_start = time.perf_counter()

  def due(every: int) -> bool:
    return step == total_steps or (every > 0 and step % every == 0)

  def timed_first(name: str, fn: Callable[[], Any]) -> Any:
    """Runs fn; the first time, says that it compiles and how long it took."""
    if name in first_calls:
      return fn()
    logging.info("%s: compiling the %s (its first call includes the compilation) ...", stage, name)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first_calls[name] = time.perf_counter() - t0
    logging.info("%s: %s compiled and run in %.1f s", stage, name, first_calls[name])
    return out

  multi_process = preemption.multi_process()
  saved_step = start             # the newest step on disk (or the stage's starting point)
  preemption.set_unsaved(False)

  def should_stop() -> bool:
    if multi_process:
      return ckpt.manager.reached_preemption(_steps_run)
    return preemption.stop_requested()

  def stop() -> None:
    t0 = time.perf_counter()
    if saved_step != step:
      ckpt.save(step, state, data_iter)
      preemption.set_unsaved(False)
      saved = f"checkpoint {ckpt.directory}/{step} saved in {time.perf_counter() - t0:.2f} s"
    else:
      saved = (f"checkpoint {ckpt.directory}/{step} already saved" if step > 0 else
               "nothing to save")
    left = preemption.seconds_left()
    message = (f"preempted: {stage} stopped at step {step} of {total_steps}, {saved}"
               + (f" ({left:.1f} s of the grace period left)" if left is not None else "")
               + f"; exiting with status {preemption.EXIT_CODE}, rerun the same command to continue")
    logging.warning("%s", message)
    raise preemption.Preempted(message)

  if start < total_steps:
    logging.info("%s: steps %d → %d", stage, start, total_steps)
    if not multi_process and should_stop():
      stop()
  try:
    while step < total_steps:
      batch = next_batch()
      state, metrics = timed_first("train step", lambda: step_fn(state, batch))
      step += 1
      _steps_run += 1
      if first_step_done is None:
        first_step_done = time.time()
      scalars = runs.host_scalars(metrics)
      check_finite(scalars, step)
      preemption.set_unsaved(True)
      if progress is not None:
        progress(step)
      if due(log_every):
        writer.write_scalars(step_offset + step, {prefix + k: v for k, v in scalars.items()})
      if sample_fn is not None and due(sample_every):
        images = timed_first("sample generator", lambda: sample_fn(step, state))
        writer.write_images(step_offset + step, {prefix + k: v[None] for k, v in images.items()})
      if eval_fn is not None and due(eval_every):
        metrics_eval = timed_first("evaluation", lambda: eval_fn(state))
        writer.write_scalars(step_offset + step, {prefix + k: v for k, v in metrics_eval.items()})
      if due(checkpoint_every):
        ckpt.save(step, state, data_iter)
        saved_step = step
        preemption.set_unsaved(False)
        if ckpt.last_save_s is not None:
          preemption.check_save_time(ckpt.last_save_s, ckpt.directory)
      writer.flush()
      preemption.maybe_signal_for_test(step, stage)
      if should_stop():
        stop()
  except KeyboardInterrupt:
    if int(state.step) > start and ckpt.latest_step() != int(state.step):
      logging.warning("interrupted at step %d: saving a checkpoint before exiting", int(state.step))
      ckpt.save(int(state.step), state, data_iter)
    raise
  if step > start:
    runs.record_stage(ckpt.directory, stage, start_step=start, end_step=step,
                      wall_s=time.perf_counter() - t_start, final_metrics=scalars,
                      first_step_s=first_calls.get("train step"), first_step_time=first_step_done)
  return state, scalars

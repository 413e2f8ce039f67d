"""Orbax checkpoints: one folder per training stage, and partial restores for inference.

Training (:class:`StageCheckpointer`): one Orbax ``CheckpointManager`` per stage folder
(``<workdir>/checkpoints/<stage>/<step>/``) holding the train state (item ``state``) and the grain
iterator state (item ``data_iter``); Orbax writes to a temporary folder
(``<step>.orbax-checkpoint-tmp-<time>``) and renames it when complete, so an interrupted save
(``kill -9``, an OOM kill) never replaces a good checkpoint and is never restored: the next run
deletes such folders when it opens the stage (Orbax ``cleanup_tmp_directories``) and resumes from
the newest complete step. A save that fails (disk full, unwritable folder) raises
:class:`CheckpointSaveError`; the previous checkpoints stay as they were.

Inference (:func:`restore_partial`): Orbax partial restore of the arrays generation needs
(``params``, ``batch_stats``) from a training checkpoint, with a check that names every missing
or differently shaped array; :func:`save_tree` writes the inference-only layout
(:mod:`hpt_jax.inference`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import time
from typing import Any

import logging as std_logging

import jax
import orbax.checkpoint as ocp
from absl import logging

from hpt_jax import errors


def _not_item_metadata_warning(record) -> bool:
  # Orbax warns "Metadata file does not exist" when an item folder (not a step folder) is read
  # directly, as restore_partial does; nothing is missing.
  return "Metadata file does not exist" not in str(record.getMessage())


std_logging.getLogger("absl").addFilter(_not_item_metadata_warning)
logging.get_absl_handler().addFilter(_not_item_metadata_warning)


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
    #: Seconds the last :meth:`save` took (None before the first).
    self.last_save_s: float | None = None
    half_written = sorted(glob.glob(os.path.join(self.directory, "*" + TMP_SUFFIX + "*")))
    if half_written:
      logging.warning("deleting %d half-written checkpoint(s) of an interrupted save: %s",
                      len(half_written), ", ".join(os.path.basename(p) for p in half_written))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.manager.wait_until_finished()    # the clean-up of half-written folders

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter=None) -> None:
    """Saves ``state`` (and the iterator state) at ``step``; blocks until it is on disk.

    Sets :attr:`last_save_s`.

    Raises:
      CheckpointSaveError: the write failed (``OSError``: disk full, read-only or unwritable
        folder, ...); the message names the folder, the reason and the checkpoint kept.
    """
    import grain  # local: grain is only needed where data iterators are checkpointed
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    t0 = time.perf_counter()
    try:
      with _test_fault(step):
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self.manager.wait_until_finished()
    except OSError as e:
      kept = self.manager.latest_step()
      for tmp in glob.glob(os.path.join(self.directory, f"{step}{TMP_SUFFIX}*")):
        shutil.rmtree(tmp, ignore_errors=True)     # frees the space a full disk needs
      raise CheckpointSaveError(
          f"saving checkpoint {self.directory}/{step} failed: {e}; "
          + (f"the previous checkpoint {self.directory}/{kept} is kept" if kept is not None
             else "no earlier checkpoint of this stage")
          + "; the run stops instead of training on unsaved (free space or fix the folder's "
          "permissions, then rerun the same command to resume)") from e
    self.last_save_s = time.perf_counter() - t0
    logging.info("saved checkpoint %s/%d in %.2f s", self.directory, step, self.last_save_s)

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
      raise CheckpointNotFoundError(f"no checkpoint in {self.directory}")
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


def abstract_like(tree, sharding):
  """``jax.ShapeDtypeStruct`` pytree of ``tree`` (arrays or shape structs) carrying ``sharding``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


#: Suffix of Orbax's temporary folders (``<step>.orbax-checkpoint-tmp-<time>``).
TMP_SUFFIX = ".orbax-checkpoint-tmp"
#: Test-only fault injection inside :meth:`StageCheckpointer.save` (read only when set):
#: ``pause:STEP:FILE`` — at the save of STEP, after the data are written and before Orbax's commit
#: rename, create FILE and sleep (a test kills the process there); ``enospc:STEP`` — raise
#: ``OSError(ENOSPC)`` at the same point, as a write to a full disk does.
TEST_FAULT_ENV = "HPT_JAX_TEST_SAVE_FAULT"


@contextlib.contextmanager
def _test_fault(step: int):
  spec = os.environ.get(TEST_FAULT_ENV)
  parts = spec.split(":", 2) if spec else []
  if len(parts) < 2 or int(parts[1]) != step:
    yield
    return
  from orbax.checkpoint._src.path import atomicity
  cls = atomicity.AtomicRenameTemporaryPath
  original = cls.finalize

  async def finalize(self, *args, **kwargs):
    if parts[0] == "enospc":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
    with open(parts[2], "w") as f:
      f.write(str(self.get()))
    time.sleep(600)
    return await original(self, *args, **kwargs)

  cls.finalize = finalize
  try:
    yield
  finally:
    cls.finalize = original


class CheckpointSaveError(errors.UserError, OSError):
  """A checkpoint could not be written (disk full, unwritable folder); the message names the
  folder, the reason and the checkpoint that is kept."""


class CheckpointNotFoundError(errors.UserError, FileNotFoundError):
  """No (or not the requested) checkpoint; the message names the folder and how to get one."""


class CheckpointMismatchError(errors.UserError, ValueError):
  """A checkpoint does not hold what the model needs (missing networks, other shapes); the
  message names the folder and the differences."""


def checkpoint_steps(directory: str) -> list[int]:
  """Steps of the complete checkpoints in ``directory`` (numeric subfolders, ascending).

  Orbax renames a temporary folder to the bare step only once the save is complete, so a
  half-written save is never listed. A missing folder gives ``[]``.
  """
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def _keypaths(tree) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_partial(path: str, target: Any) -> Any:
  """Restores only the leaves of ``target`` from the Orbax PyTree item at ``path`` (Orbax partial restore).

  Used for inference: from a training checkpoint's ``state`` item only the generator ``params``
  (and ``batch_stats``) are read — not optimiser states, discriminators or data iterators.

  Args:
    path: an item folder, e.g. ``<workdir>/checkpoints/drn/<step>/state``.
    target: pytree (nested dicts) of ``jax.ShapeDtypeStruct`` with shardings; the names must be
      those of the saved tree (a ``flax.struct`` state saves its fields as dict keys).

  Returns:
    the same tree of ``jax.Array`` placed with the target's shardings.

  Raises:
    CheckpointNotFoundError: ``path`` is not a checkpoint item.
    CheckpointMismatchError: names absent from the checkpoint, or shapes/dtypes that differ (the
      message lists them, with the folder).
  """
  if not os.path.isdir(path):
    raise CheckpointNotFoundError(f"no checkpoint item at {path}")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path).item_metadata
  saved = _keypaths(getattr(meta, "tree", meta))
  wanted = _keypaths(target)
  missing = sorted(k for k in wanted if k not in saved)
  wrong = sorted(f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(v.shape)}" for k, v in wanted.items()
                 if k in saved and tuple(getattr(saved[k], "shape", ())) != tuple(v.shape))
  if missing or wrong:
    detail = []
    if missing:
      detail.append(f"{len(missing)} arrays missing (e.g. {', '.join(missing[:3])})")
    if wrong:
      detail.append(f"{len(wrong)} arrays of another shape (e.g. {'; '.join(wrong[:3])})")
    raise CheckpointMismatchError(f"checkpoint {path} does not match the model: {'; '.join(detail)}")
  args = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                partial_restore=True)
  try:
    return ckptr.restore(path, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointMismatchError(f"checkpoint {path} does not match the model: {e}") from e


def save_tree(path: str, tree: Any) -> None:
  """Writes a pytree of arrays to ``path`` as one Orbax PyTree item (atomic: temporary folder,
  then rename). An existing ``path`` is replaced."""
  ckptr = ocp.PyTreeCheckpointer()
  ckptr.save(os.path.abspath(path), args=ocp.args.PyTreeSave(tree), force=True)

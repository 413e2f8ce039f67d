"""Preemption (SIGTERM) for training: save at the step reached, exit with status 143, resume exactly.

Cloud accelerators, SLURM and Kubernetes end a job with SIGTERM and, after a grace period,
SIGKILL. :func:`install` (called by ``launch/train.py`` with ``config.preemption_grace_s``) makes
SIGTERM a request, never an exception inside a step (the train state is donated to the step):

* A Python handler and a watchdog thread (woken through :func:`signal.set_wakeup_fd`, so it runs
  even while the main thread is inside XLA, e.g. compiling) record the request.
* :func:`hpt_jax.train.loop.run_steps` checks :func:`stop_requested` between steps; it saves a
  checkpoint at the step reached (state, grain iterator; the stage folder names the DRN run, the
  HPN level or the DIAF phase), logs where it stopped and raises :class:`Preempted`, which exits
  the process with :data:`EXIT_CODE`.
* When no step has completed since the last checkpoint (first compilation, data loading, restore,
  between stages), there is nothing to save: the watchdog logs it and exits at once.
* If the process is still running ``grace_s`` seconds after the signal (a save slower than the
  grace period), the watchdog exits it; the unfinished save is a temporary folder that the rerun
  deletes (:mod:`hpt_jax.checkpoints`), and the rerun resumes from the last complete checkpoint.

Exit status 143 = 128 + SIGTERM(15) is what a shell, Docker and Kubernetes report for a process
that SIGTERM ended, so every policy that already treats "terminated by SIGTERM" as "restart me"
handles a clean preemption stop the same way: Kubernetes ``restartPolicy: OnFailure``/``Always``
restart it (any non-zero status), a Job's ``podFailurePolicy`` can list 143 with ``action:
Ignore`` so preemptions do not count against ``backoffLimit``; under SLURM ``PreemptMode=REQUEUE``
requeues the job whatever its status, and a batch script can requeue itself on 143 (``scontrol
requeue $SLURM_JOB_ID``). 0 would mark the job done, 1 and 2 are this project's user and
command-line errors.

Multi-process runs (``jax.process_count() > 1``): :func:`install` leaves SIGTERM to JAX's
preemption service (started by ``jax.distributed.initialize``), and the loop asks Orbax's
``CheckpointManager.reached_preemption`` (``jax.experimental.multihost_utils
.reached_preemption_sync_point``) after every step, so every process saves at the same step.

Grain worker processes (``data.num_workers > 0``) run :func:`grain_worker_init`: they ignore
SIGTERM and SIGINT (a signal to the whole process group or job must not kill them before the
save, which reads the iterator position in the training process), are stopped by the training
process with SIGKILL (grain's own ``close``, or :func:`stop_grain_workers_at_exit`), and exit by
themselves when the training process is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from absl import logging

#: Exit status after a preemption stop (128 + SIGTERM); see the module docstring.
EXIT_CODE = 128 + signal.SIGTERM
#: Default seconds between SIGTERM and SIGKILL that the run assumes (Kubernetes' default
#: ``terminationGracePeriodSeconds`` is 30 s; 25 s leaves a margin).
DEFAULT_GRACE_S = 25.0
#: Test-only: ``STEP`` makes the loop send this process SIGTERM after that many steps of a
#: stage (``STEP@STAGE`` for one stage folder, e.g. ``1@level_32x24``; a ``!group`` suffix has a
#: ``kill`` process send it to the whole process group, grain workers included, as SLURM signals
#: every process of a job). Read only when set.
TEST_SIGNAL_ENV = "HPT_JAX_TEST_SIGTERM_AT_STEP"


class Preempted(SystemExit):
  """Training stopped after a SIGTERM; ``code`` is :data:`EXIT_CODE`.

  A ``SystemExit``: launchers exit with the status without a traceback, and ``except Exception``
  in library code does not swallow it. ``message`` says where the run stopped.
  """

  def __init__(self, message: str):
    super().__init__(EXIT_CODE)
    self.message = message


class _State:
  installed = False
  grace_s = DEFAULT_GRACE_S
  requested_at: float | None = None   # time.monotonic() of the first SIGTERM
  unsaved = False                     # steps completed since the last checkpoint
  warned_slow_save = False
  lock = threading.Lock()
  read_fd: int | None = None


_state = _State()


def install(grace_s: float = DEFAULT_GRACE_S) -> bool:
  """Turns SIGTERM into a save-and-exit request (module docstring). Call from the main thread.

  Args:
    grace_s: seconds after SIGTERM by which the process must have exited (> 0).

  Returns:
    True when the handler is installed; False in a multi-process run (JAX's preemption service
    owns SIGTERM there) or outside the main thread (nothing is changed).

  Raises:
    ValueError: ``grace_s`` is not positive.
  """
  if not grace_s > 0:
    raise ValueError(f"preemption grace period must be > 0 seconds, got {grace_s}")
  _state.grace_s = float(grace_s)
  if _state.installed:
    return True
  if multi_process():
    logging.info("SIGTERM is handled by JAX's preemption service: every process saves at the step "
                 "multihost_utils.reached_preemption_sync_point agrees on")
    return False
  if threading.current_thread() is not threading.main_thread():
    return False
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.signal(signal.SIGTERM, _python_handler)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  _state.read_fd = read_fd
  threading.Thread(target=_watchdog, name="hpt_jax-preemption", daemon=True).start()
  _state.installed = True
  return True


def multi_process() -> bool:
  """True on multi-process runs, where the stop step comes from JAX's preemption sync point."""
  import jax
  return jax.process_count() > 1


def stop_requested() -> bool:
  """True once SIGTERM was received (single-process runs)."""
  return _state.requested_at is not None


def set_unsaved(unsaved: bool) -> None:
  """The loop says whether steps completed since the last checkpoint (decides whether a SIGTERM
  must wait for a save or may exit at once)."""
  _state.unsaved = unsaved


def seconds_left() -> float | None:
  """Seconds of the grace period left since SIGTERM, or None before any SIGTERM."""
  if _state.requested_at is None:
    return None
  return _state.grace_s - (time.monotonic() - _state.requested_at)


def check_save_time(seconds: float, directory: str) -> None:
  """Warns (once per process) when a checkpoint save took more than half the grace period: a
  preemption may then run out of time before its save is complete."""
  if seconds > 0.5 * _state.grace_s and not _state.warned_slow_save:
    _state.warned_slow_save = True
    logging.warning("saving a checkpoint in %s took %.1f s, more than half of the %g s grace period "
                    "after SIGTERM (config.preemption_grace_s): a preemption may exit before its save "
                    "is complete (the previous checkpoint is then used); raise the grace period and "
                    "the scheduler's (docs/reliability.md)", directory, seconds, _state.grace_s)


def maybe_signal_for_test(step: int, stage: str) -> None:
  """Test hook (:data:`TEST_SIGNAL_ENV`): sends this process SIGTERM after ``step`` of ``stage``."""
  spec = os.environ.get(TEST_SIGNAL_ENV)
  if not spec:
    return
  spec, _, target = spec.partition("!")
  at, _, only = spec.partition("@")
  if int(at) == step and (not only or only == stage):
    if target == "group":
      import subprocess
      # (the kill process is in the group too and dies of it: its status is not checked)
      subprocess.run(["kill", "-s", "TERM", "--", f"-{os.getpgid(0)}"], check=False)
    else:
      os.kill(os.getpid(), signal.SIGTERM)


def _python_handler(signum, frame) -> None:
  del frame
  _request(signum)


def _request(signum: int) -> bool:
  """Records the first SIGTERM; returns True if this call recorded it."""
  with _state.lock:
    if _state.requested_at is not None:
      return False
    _state.requested_at = time.monotonic()
  logging.warning("received %s: the run stops after the current step", signal.Signals(signum).name)
  return True


def _exit_now(message: str) -> None:
  logging.warning("%s", message)
  logging.flush()
  sys.stderr.flush()
  os._exit(EXIT_CODE)  # pylint: disable=protected-access


def _watchdog() -> None:
  """Wakes on every signal byte of the wakeup fd; acts on SIGTERM even while the main thread is
  inside a long C call (compilation)."""
  while True:
    try:
      data = os.read(_state.read_fd, 64)
    except InterruptedError:
      continue
    if not data:
      return
    if signal.SIGTERM not in data:
      continue
    _request(signal.SIGTERM)
    if not _state.unsaved:
      _exit_now(f"no step since the last checkpoint: nothing to save; exiting with status {EXIT_CODE}")
    deadline = _state.requested_at + _state.grace_s
    while time.monotonic() < deadline:
      time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    _exit_now(f"the grace period of {_state.grace_s:g} s (config.preemption_grace_s) ran out before "
              "the checkpoint was complete: exiting without it; a rerun resumes from the last "
              f"complete checkpoint (status {EXIT_CODE})")


# ------------------------------------------------------------------ grain workers
_GRAIN_PROCESS_PREFIX = "grain-process-prefetch"   # the name grain 0.2 gives its worker processes
_reaper_registered = False


def grain_worker_init(worker_index: int = 0, worker_count: int = 1) -> None:
  """``worker_init_fn`` of grain's ``mp_prefetch``, run in each worker process (module docstring).

  The worker ignores SIGTERM and SIGINT (a signal to the process group or to every process of a
  job must not kill it before the training process has saved; it prints one line instead) and
  exits by itself within a second when the training process is gone (e.g. after ``kill -9``).
  The training process stops its workers with grain's own ``close`` (SIGKILL after a stop event)
  or, at exit, :func:`stop_grain_workers_at_exit`'s SIGKILL, never with SIGTERM.
  """
  del worker_index, worker_count
  parent = os.getppid()

  def ignore(signum, frame) -> None:
    del frame
    print(f"grain worker {os.getpid()}: ignoring {signal.Signals(signum).name}; the training process "
          "saves, then stops its workers", file=sys.stderr, flush=True)

  signal.signal(signal.SIGTERM, ignore)
  signal.signal(signal.SIGINT, ignore)

  def exit_with_parent() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=exit_with_parent, name="hpt_jax-grain-worker-parent", daemon=True).start()


def stop_grain_workers_at_exit() -> None:
  """Registers (once) an exit hook that SIGKILLs this process's grain workers still running.

  It runs before :mod:`multiprocessing`'s own exit hook, which would send them SIGTERM (ignored,
  :func:`grain_worker_init`) and wait for them forever.
  """
  global _reaper_registered
  if _reaper_registered:
    return
  import atexit
  atexit.register(_stop_grain_workers)
  _reaper_registered = True


def _stop_grain_workers() -> None:
  import multiprocessing
  for process in multiprocessing.active_children():
    if process.name.startswith(_GRAIN_PROCESS_PREFIX):
      process.kill()
      process.join(5)

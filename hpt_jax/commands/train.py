r"""Trains a pose-transfer model: ``python launch/train.py --config=deepfashion_drn --workdir=DIR``.

Flags:
  --config        an ml_collections config file, optionally ``file.py:preset``; any field can be
                  overridden, e.g. ``--config.batch_size=16 --config.model.ngf=32``.
  --workdir       run folder: checkpoints, TensorBoard events, samples and config.json. A rerun
                  with the same workdir resumes from its latest checkpoint (a changed model field
                  stops it; other changes are logged to DIR/config_history.jsonl).
  --rerun         OLD_WORKDIR: start a new run (in --workdir) with exactly the old run's resolved
                  config (instead of --config), warning about every difference in code, packages,
                  XLA settings and data files.

``config.deterministic=true`` sets XLA's ``--xla_gpu_deterministic_ops=true`` before the backend
starts (GPU reductions in a fixed order; CPU runs are deterministic already).

At the end it prints a summary (per stage: steps, time, final losses, checkpoint; where the samples,
TensorBoard events and config.json are), also kept in ``DIR/summary.json``. Run with ``--help``
for the presets and config fields, ``--print_config`` for the resolved config.

Compilations are cached in ``~/.cache/hpt_jax/xla`` (``HPT_JAX_COMPILATION_CACHE=DIR`` moves it,
``=off`` disables it), so a rerun or a resume of the same config starts in seconds.

SIGTERM (preemption) saves a checkpoint at the step reached and exits with status 143 within
``config.preemption_grace_s`` seconds; rerun the same command to continue (docs/reliability.md).
"""

import os
import sys
import time

from absl import flags, logging
from ml_collections import config_flags
from hpt_jax import cli, parallel, preemption, registry, runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, events, samples).")
_RERUN = flags.DEFINE_string("rerun", None, "An earlier run folder: train a new run with its exact config.")


def resolve_config():
  """(config, source) from ``--config`` (with overrides) or ``--rerun``; one of them is required."""
  if _RERUN.value:
    if _CONFIG.value is not None:
      raise cli.UsageError("--rerun takes the old run's config: give --rerun or --config, not both")
    if os.path.abspath(_RERUN.value) == os.path.abspath(_WORKDIR.value):
      raise cli.UsageError("--rerun needs a new --workdir (to continue the same run, rerun its command)")
    config, _ = runs.rerun_config(_RERUN.value)
    return config, {"rerun": os.path.abspath(_RERUN.value),
                    "config": (runs.read_record(_RERUN.value).get("source") or {}).get("config")}
  if _CONFIG.value is None:
    raise cli.UsageError("missing flag --config (or --rerun=OLD_WORKDIR)")
  return _CONFIG.value, {"config": cli.config_arg(sys.argv), "overrides": cli.config_overrides()}


def warn_if_cpu(config, name: str) -> None:
  """Warns once when a preset sized for an accelerator (``name``, e.g. ``deepfashion_drn``) is
  about to train on the CPU backend."""
  import jax
  phases = config.get("phases")
  steps = int(config.get("total_steps") or config.get("steps_per_level")
              or (sum(int(p.total_steps) for p in phases.values()) if phases else 0))
  message = parallel.cpu_step_warning(cli.config_flops_per_pair(name) if name else None, int(config.batch_size),
                                      steps, backend=jax.default_backend(), cpu_cores=os.cpu_count() or 1,
                                      what=f"--config={name}")
  if message:
    logging.warning("%s", message)


def train(config, workdir: str, source: dict | None = None, *, started: float | None = None) -> str:
  """Trains ``config`` in ``workdir``: what ``hpt-train`` does once its flags are read (also called
  in-process by :func:`hpt_jax.notebook.train`).

  Writes or checks ``DIR/config.json`` (:func:`hpt_jax.runs.write_config_json`), warns when a
  preset sized for an accelerator runs on the CPU, and runs the family's ``train_and_evaluate``
  (resuming from the latest checkpoint).

  Args:
    config: the resolved config (``config.model_name`` picks the family, :mod:`hpt_jax.registry`).
    workdir: the run folder.
    source: where the config came from, for ``config.json`` (``{'config': 'NAME[:PRESET]',
      'overrides': [...]}``; its ``config`` also names the preset for the CPU warning).
    started: ``time.perf_counter()`` when the command started (default: now), for the summary.

  Returns:
    the run summary text (per stage: steps, time, final losses, checkpoint; also in
    ``DIR/summary.json``).

  Raises:
    hpt_jax.errors.UserError subclasses: bad config, data or resume (one line naming the field or file).
  """
  t0 = time.perf_counter() if started is None else started
  family = registry.get(config.model_name)
  warn_if_cpu(config, (source or {}).get("config") or "")
  logging.info("training %s in %s", config.model_name, workdir)
  runs.write_config_json(workdir, config, source)
  family.train_module().train_and_evaluate(config, workdir)
  return runs.run_summary(workdir, time.perf_counter() - t0)


def main(argv):
  del argv  # cli.run rejects extra arguments
  t0 = time.perf_counter()
  runs.quiet_library_logs()
  config, source = resolve_config()
  parallel.set_deterministic(bool(config.get("deterministic", False)))
  parallel.maybe_initialize_distributed()
  preemption.install(config.get("preemption_grace_s", preemption.DEFAULT_GRACE_S))
  print(train(config, _WORKDIR.value, source, started=t0), flush=True)


def run() -> None:
  """Console script ``hpt-train`` (and ``python launch/train.py``)."""
  cli.run(main, config_flag=_CONFIG, required=("workdir",), doc=__doc__)


if __name__ == "__main__":
  run()

"""Device mesh and batch sharding shared by training, evaluation and inference.

Parallelism: one 1-D mesh ``('data',)`` over every device of every process
(``jax.make_mesh``). Model variables are replicated (``NamedSharding(mesh, P())``), each batch is
split along its leading axis (``P('data')``), and steps are plain ``jax.jit`` — the compiler
inserts the gradient all-reduce, so the same code runs on 1 CPU, 8 GPUs or a TPU pod
(``jax.pmap`` is in maintenance mode since JAX 0.8). Multi-host: call
:func:`maybe_initialize_distributed` first; each process feeds only its own shard of the global
batch (``jax.make_array_from_process_local_data``). The initial train state is compiled and placed
with :func:`initialize`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hpt_jax import errors

DATA_AXIS = "data"


#: Environment variable: ``1`` forces ``jax.distributed.initialize()`` (auto-detected arguments),
#: ``0`` never calls it; unset = :func:`multiprocess_environment` decides.
DISTRIBUTED_ENV = "HPT_JAX_DISTRIBUTED"


def multiprocess_environment(environ: Mapping[str, str] | None = None) -> str | None:
  """Which multi-process launcher started this process, or None for a single process.

  Read from the variables ``jax.distributed.initialize()``'s cluster auto-detection uses:
  ``JAX_COORDINATOR_ADDRESS`` (explicit), SLURM (``SLURM_NTASKS`` > 1, e.g. ``srun`` with
  ``--ntasks``), Open MPI (``OMPI_COMM_WORLD_SIZE`` > 1, ``mpirun -np N``) and multi-host Cloud TPU
  slices (``TPU_WORKER_HOSTNAMES`` naming more than one host, set on every TPU VM worker).

  Returns:
    ``"explicit"``, ``"slurm"``, ``"openmpi"``, ``"tpu"`` or None.
  """
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "openmpi"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
    return "tpu"
  return None


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` (arguments auto-detected) in a multi-process run.

  A run is multi-process when :func:`multiprocess_environment` detects a launcher, or when
  ``HPT_JAX_DISTRIBUTED=1``; ``HPT_JAX_DISTRIBUTED=0`` disables it. Every process then sees all
  devices of all hosts (``jax.devices()``), builds the same ``('data',)`` mesh over them, reads its
  own shard of every global batch (:func:`hpt_jax.input_pipeline.pipeline.create_pair_dataset`
  shards by ``jax.process_index()``) and process 0 alone writes logs, samples and TensorBoard
  events; Orbax checkpoints are written by all processes together. Single-process runs do nothing.
  """
  force = os.environ.get(DISTRIBUTED_ENV, "").strip()
  if force == "0":
    return
  where = multiprocess_environment()
  if where or force == "1":
    logging.info("multi-process run (%s): jax.distributed.initialize()", where or f"{DISTRIBUTED_ENV}=1")
    jax.distributed.initialize()
    logging.info("process %d of %d, %d local and %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


#: The XLA flag ``config.deterministic`` adds (GPU: reductions and scatters in a fixed order).
DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"


def set_deterministic(enabled: bool, environ: dict | None = None) -> None:
  """Adds :data:`DETERMINISTIC_XLA_FLAG` to ``XLA_FLAGS`` when ``enabled`` (once).

  XLA reads ``XLA_FLAGS`` when the backend starts, so call this before any JAX computation or
  device query (``hpt-train`` does it first thing). CPU runs are deterministic without it.

  Args:
    enabled: ``config.deterministic``.
    environ: the environment to change (default ``os.environ``).
  """
  env = os.environ if environ is None else environ
  flags_now = env.get("XLA_FLAGS", "")
  if enabled and "xla_gpu_deterministic_ops" not in flags_now:
    env["XLA_FLAGS"] = f"{flags_now} {DETERMINISTIC_XLA_FLAG}".strip()


#: Training FLOP/s of one CPU core, for :func:`cpu_step_warning`: the ``:cpu`` DRN preset ran at
#: 38.4 GFLOP/s on 2 cores (``launch/benchmark.py --config=deepfashion_drn:cpu``, docs/performance.md).
CPU_FLOPS_PER_CORE = 19e9


def cpu_step_warning(flops_per_pair: float | None, batch_size: int, total_steps: int, *, backend: str,
                     cpu_cores: int, what: str, threshold_s: float = 30.0) -> str | None:
  """The warning for a config sized for an accelerator that is about to train on the CPU backend.

  Args:
    flops_per_pair: training FLOPs per pair of the preset (its config module's ``FLOPS_PER_PAIR``;
      measured by ``launch/benchmark.py --flops_only``), or None if not recorded (no warning).
    batch_size: global batch (pairs per step).
    total_steps: steps of the run (per stage for staged families: a lower bound of the run).
    backend: ``jax.default_backend()``; only ``"cpu"`` warns.
    cpu_cores: cores JAX may use (``os.cpu_count()``).
    what: the config as the user named it, for the message.
    threshold_s: warn when the expected step takes longer than this.

  Returns:
    One line — expected seconds per step at :data:`CPU_FLOPS_PER_CORE` × ``cpu_cores`` and the
    whole run in days — or None (an accelerator backend, no recorded cost, or a quick step).
  """
  if backend != "cpu" or not flops_per_pair:
    return None
  step_s = flops_per_pair * batch_size / (CPU_FLOPS_PER_CORE * max(1, cpu_cores))
  if step_s < threshold_s:
    return None
  run = f", ≈{step_s * total_steps / 86400:,.0f} days for {total_steps:,} steps" if total_steps > 0 else ""
  return (f"{what} is sized for an accelerator, but JAX runs on the CPU: expect ≈{step_s:,.0f} s per step "
          f"({flops_per_pair * batch_size / 1e12:.1f} TFLOP at ≈{CPU_FLOPS_PER_CORE * cpu_cores / 1e9:.0f} GFLOP/s "
          f"on {cpu_cores} cores){run}. "
          "Install JAX for your GPU or TPU (README, Install) or use a reduced preset such as :cpu.")


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
    raise errors.ConfigError(f"batch_size={global_batch} (global) must be divisible by the {n_dev} devices of the mesh")
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


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading axis to ``n`` by repeating the last element (a short last eval batch keeps
  the compiled batch shape; callers drop the padded results)."""
  x = np.asarray(x)
  if len(x) == n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)], axis=0)


# ------------------------------------------------------------ initialisation
#: XLA options for the one-off parameter initialisation: no backend (LLVM) optimisation. The init
#: program is a few hundred threefry draws that run once; optimising them cost most of its compile
#: time (tiny DRN on 2 CPU cores: 23.1 s → 2.7 s). Values agree with an optimised compile to 1 ulp.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def initialize(init_fn: Callable[[jax.Array], Any], rng: jax.Array, *, out_shardings, what: str) -> Any:
  """``init_fn(rng)`` compiled once with :data:`INIT_COMPILER_OPTIONS`, logged and timed.

  Args:
    init_fn: traceable ``rng -> state`` (static arguments bound, e.g. with ``functools.partial``).
    rng: PRNG key.
    out_shardings: sharding of the state (replicated in training).
    what: what is initialised, for the log line ("the DRN networks").

  Returns:
    The state, on device, with ``out_shardings``. A backend that rejects the options compiles with
    its defaults (logged).
  """
  t0 = time.perf_counter()
  logging.info("compiling the initialisation of %s ...", what)
  state = jax.block_until_ready(compile_init(init_fn, rng, out_shardings=out_shardings)(rng))
  logging.info("initialised %s in %.1f s", what, time.perf_counter() - t0)
  return state


def compile_init(init_fn: Callable[[jax.Array], Any], rng, *, out_shardings):
  """The compiled ``init_fn`` (XLA executable) with :data:`INIT_COMPILER_OPTIONS`; ``rng`` may be
  abstract (``jax.ShapeDtypeStruct``). Used by :func:`initialize` and timed by ``launch/benchmark.py``."""
  lowered = jax.jit(init_fn, out_shardings=out_shardings).lower(rng)
  try:
    return lowered.compile(compiler_options=INIT_COMPILER_OPTIONS)
  except Exception as e:  # noqa: BLE001 - an option the backend does not know; use its defaults
    logging.info("init compiled with the backend's default options (%s)", e)
    return lowered.compile()

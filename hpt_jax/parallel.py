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

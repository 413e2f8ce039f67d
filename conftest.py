"""Test-session settings: the repository root importable, XLA compilations shared and cheap, the
slowest test files scheduled first.

* The persistent compilation cache (a per-session temporary folder, also handed to subprocesses
  and to every pytest-xdist worker through ``JAX_COMPILATION_CACHE_DIR``) lets the several tests
  that compile the same tiny step compile it once.
* ``XLA_FLAGS`` gets ``--xla_backend_optimization_level=0`` (unless the variable already sets the
  level): the tests' programs are tiny and compile-bound, and LLVM's optimisation passes were about
  half of the suite's CPU time on 2 cores. It changes code generation only, not what is computed;
  the convolutions still run in the optimised library kernels. Training and benchmarks outside the
  tests keep XLA's default level (only their initialisation uses level 0, ``hpt_jax.parallel``).
* ``--dist loadfile`` hands whole files to the workers in collection order, so the files that take
  longest (:data:`SLOW_FILES`, measured with ``--durations``) are collected first: otherwise one of
  them, started last, leaves the other worker idle at the end.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hpt_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

#: Test files, slowest first (seconds of one worker in a clean-clone run); the rest keep their order.
SLOW_FILES = (
    "test_reliability.py",
    "test_evaluate.py",
    "test_parallel.py",
    "test_drn.py",
    "test_diaf.py",
    "test_transfer.py",
    "test_hpn.py",
    "test_packaging.py",
    "test_train.py",
)


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))

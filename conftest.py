"""Makes the repository root importable for pytest and shares XLA compilations between tests.

The persistent compilation cache (a per-session temporary folder, also handed to subprocesses
through ``JAX_COMPILATION_CACHE_DIR``) lets the several tests that compile the same tiny DRN step
compile it once.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hpt_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

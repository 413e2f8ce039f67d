"""The packaged configs, and how a ``--config`` value names one.

Each module here (``deepfashion_drn``, ``deepfashion_hpn``, ``hpn_1024``, ``deepfashion_diaf``, …)
has ``get_config(preset=None)`` returning an ``ml_collections.ConfigDict``, a ``PRESETS`` dict
``{preset: description}`` and, for presets sized for an accelerator, ``FLOPS_PER_PAIR``.

A config is named as ``NAME[:preset]`` (a packaged module, from any directory and in an installed
copy) or ``path/to/file.py[:preset]`` (any file with ``get_config``). Used by the command line
(:mod:`hpt_jax.cli`) and by reruns (:func:`hpt_jax.runs.rerun_config`).
"""

from __future__ import annotations

import glob
import importlib.util
import os

#: The folder of the packaged configs (installed with the wheel).
CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def packaged() -> dict[str, str]:
  """``{name: file path}`` of the configs shipped in the package (``hpt_jax/configs/NAME.py``)."""
  return {os.path.basename(p)[:-3]: p for p in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
          if not os.path.basename(p).startswith("_")}


def resolve(value: str) -> str:
  """A ``--config`` value with a packaged config's name replaced by its file path.

  ``deepfashion_drn:cpu`` (also ``deepfashion_drn.py:cpu``) is the installed
  ``hpt_jax/configs/deepfashion_drn.py`` with preset ``cpu``, from any directory. A path that exists
  is kept as it is, so a user's own config file always wins. For the commands written before the
  configs moved into the package, ``configs/NAME.py`` (any folder named ``configs``) that does not
  exist also means the packaged ``NAME``.

  Returns the value unchanged when it names no file and no packaged config (the caller reports it).
  """
  path, sep, preset = value.partition(":")
  if os.path.isfile(path):
    return value
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  parent = os.path.dirname(os.path.normpath(path))
  table = packaged()
  if name in table and (parent == "" or os.path.basename(parent) == "configs"):
    return table[name] + sep + preset
  return value


def split(value: str) -> tuple[str, str]:
  """``"file.py:preset"`` → ``("file.py", "preset")`` (preset ``""`` when absent)."""
  path, _, preset = value.partition(":")
  return path, preset


def load_module(path: str):
  """Executes a config file and returns its module (not registered in ``sys.modules``).

  Raises:
    FileNotFoundError: no such file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such config file {path!r}")
  spec = importlib.util.spec_from_file_location("_hpt_config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get(value: str):
  """The ``ConfigDict`` a ``--config`` value names (before command-line overrides).

  Raises:
    FileNotFoundError: the value names no file and no packaged config.
  """
  path, preset = split(resolve(value))
  return load_module(path).get_config(preset or None)

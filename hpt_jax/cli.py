"""What every launcher shares: ``--help``, ``--print_config``, readable config errors, one-line errors.

:func:`run` replaces ``absl.app.run`` in ``launch/*.py``:

* ``--help`` (``-h``, ``--helpshort``, ``--helpfull``) prints the launcher's docstring and, for a
  launcher with a ``--config`` flag, the config file's presets and its top-level fields with their
  defaults (of the chosen preset), then exits 0. Without ``--config`` it lists the presets of every
  packaged config (``hpt_jax/configs/``).
* ``--print_config`` prints the resolved config (file, preset and every ``--config.*`` override
  applied) as JSON — the same block training writes to ``<workdir>/config.json`` — and exits 0.
* Command-line errors — a config path that does not exist, an unknown preset, a misspelled field
  (with the closest field names), a value of the wrong type, an unknown flag — are printed as one
  line ``error: ...`` on stderr (plus a hint line), exit status 2, no traceback.
* A :class:`hpt_jax.errors.UserError` raised by the launcher's ``main`` (bad data, missing
  checkpoint or weights, a batch the devices cannot divide, a diverged run, ...) is printed as
  ``error: <message>`` on stderr, exit status 1, no traceback. Other exceptions are bugs
  and keep their traceback.

It also turns on JAX's persistent compilation cache (:func:`enable_compilation_cache`) before the
launcher's ``main`` runs, so a rerun of the same config skips XLA compilation.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any, Callable, Sequence

from absl import app, flags, logging

from hpt_jax import configs, errors

_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")

#: Environment variable: the persistent compilation cache folder, or ``off`` (also ``0``, ``false``,
#: ``none``) to disable it. JAX's own ``JAX_COMPILATION_CACHE_DIR``, when set, takes precedence.
CACHE_ENV = "HPT_JAX_COMPILATION_CACHE"
#: Where the cache lives by default (per user; the test suite uses its own temporary folder).
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "hpt_jax", "xla")


class UsageError(errors.UserError):
  """A command-line or config-override error (printed in one line, exit status 2)."""


# ---------------------------------------------------------------- compilation cache
def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache; returns its folder, or None if disabled.

  The folder is ``$JAX_COMPILATION_CACHE_DIR`` if set (the test suite sets a temporary one), else
  ``$HPT_JAX_COMPILATION_CACHE``, else :data:`DEFAULT_CACHE_DIR` (``~/.cache/hpt_jax/xla``).
  ``HPT_JAX_COMPILATION_CACHE=off`` disables it. Entries are keyed by the computation, the
  compiler options, the backend and the jax/jaxlib version, so a stale entry is never used; only
  compilations longer than JAX's ``jax_persistent_cache_min_compile_time_secs`` (1 s by default)
  are stored. Delete the folder to reclaim the space.
  """
  import jax
  setting = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
  if setting.strip().lower() in ("off", "0", "false", "none", "no", ""):
    return None
  path = os.path.abspath(os.path.expanduser(setting))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning("compilation cache disabled: cannot create %s (%s)", path, e)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  return path


# ---------------------------------------------------------------- config files
def config_arg(argv: Sequence[str]) -> str | None:
  """The ``--config`` value as written (``file.py[:preset]``), or None."""
  for i, a in enumerate(argv[1:], 1):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _resolve_argv(argv: Sequence[str]) -> list[str]:
  """``argv`` with the ``--config`` value passed through :func:`resolve_config_arg`."""
  out = list(argv)
  for i, a in enumerate(out[1:], 1):
    if a.startswith("--config="):
      out[i] = "--config=" + configs.resolve(a.split("=", 1)[1])
    elif a == "--config" and i + 1 < len(out):
      out[i + 1] = configs.resolve(out[i + 1])
  return out


def config_overrides(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """The ``--config.FIELD=VALUE`` overrides of the parsed command line, ``{"a.b": value}`` (tuples
  as lists, as JSON writes them); for the run records. Falls back to the raw strings of ``argv``
  (default ``sys.argv``) where ml_collections cannot report them."""
  from ml_collections import config_flags
  try:
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in config_flags.get_override_values(flags.FLAGS["config"]).items()}
  except Exception:  # noqa: BLE001 - informative only
    return {a.split("=", 1)[0][len("--config."):]: a.split("=", 1)[-1]
            for a in (sys.argv if argv is None else argv)[1:] if a.startswith("--config.")}


def config_flops_per_pair(value: str) -> float | None:
  """Training FLOPs per pair recorded for ``--config=value``'s preset (the config module's
  ``FLOPS_PER_PAIR``), or None where none is recorded (reduced presets, users' own configs)."""
  path, preset = configs.split(configs.resolve(value))
  try:
    table = getattr(configs.load_module(path), "FLOPS_PER_PAIR", {})
  except Exception:  # noqa: BLE001 - the config already loaded once; this is advisory only
    return None
  return table.get(preset)


def presets(path: str) -> dict[str, str]:
  """``{preset: one-line description}`` of a config file (its ``PRESETS``; '' = the paper's size)."""
  return dict(getattr(configs.load_module(path), "PRESETS", {"": "(the file's only config)"}))


def check_config_arg(value: str) -> None:
  """Raises :class:`UsageError` if ``--config=value`` names no file or an unknown preset."""
  path, preset = configs.split(configs.resolve(value))
  if not os.path.isfile(path):
    names = ", ".join(configs.packaged())
    close = difflib.get_close_matches(os.path.basename(path).removesuffix(".py"), list(configs.packaged()), n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    raise UsageError(f"--config={value}: no such config file {path!r}{hint} (packaged configs, usable by "
                     f"name: {names})")
  known = presets(path)
  if preset not in known:
    close = difflib.get_close_matches(preset, [p for p in known if p], n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    raise UsageError(f"--config={value}: {path} has no preset {preset!r}{hint} "
                     f"(presets: {', '.join(repr(p) if not p else p for p in known)})")


def _unknown_field_message(argv: Sequence[str], config_value: str | None, key_message: str) -> str:
  """A one-line message for a misspelled ``--config.a.b`` override (ml_collections' KeyError text)."""
  lines = [l.strip() for l in key_message.strip("'\"").replace("\\n", "\n").split("\n") if l.strip()]
  key = lines[0].strip("'\"") if lines else "?"
  suggestion = next((l for l in lines[1:] if l.startswith("Did you mean")), "")
  flag = next((a.split("=", 1)[0] for a in argv[1:]
               if a.startswith("--config.") and a.split("=", 1)[0].split(".")[-1] == key), f"--config.{key}")
  where = configs.split(config_value)[0] if config_value else "the config"
  msg = f"{flag}: {where} has no field {key!r}"
  if suggestion:
    msg += "; " + suggestion[0].lower() + suggestion[1:]
  return msg


def _parse_error_message(e: BaseException, argv: Sequence[str]) -> str:
  """One line for an exception raised while absl parsed the flags (config loading included)."""
  config_value = config_arg(argv)
  inner = e.__context__ if e.__context__ is not None else e
  if isinstance(e, AttributeError) and isinstance(inner, KeyError):
    return _unknown_field_message(argv, config_value, str(inner.args[0]) if inner.args else "")
  text = str(e)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if isinstance(e, flags.IllegalFlagValueError) and "Traceback" in text:
    # A config file raised while it was built: keep the flag and the exception's own last line.
    return f"{lines[0].split(':', 1)[0]}: {lines[-1]}"
  if isinstance(e, OSError) and config_value:
    return f"--config={config_value}: {lines[-1] if lines else text}"
  return " ".join(lines) if len(lines) <= 2 else f"{lines[0]} {lines[-1]}"


# ---------------------------------------------------------------- help
def _format_value(v: Any) -> str:
  s = json.dumps(v) if isinstance(v, (str, bool)) or v is None else str(v)
  return s if len(s) <= 60 else s[:57] + "..."


def config_help(value: str | None) -> str:
  """The help text's config part: presets and top-level fields (defaults of the chosen preset)."""
  if value is None:
    out = ["Packaged configs (--config=NAME[:PRESET], or any config file: --config=FILE.py[:PRESET]):"]
    for name, path in configs.packaged().items():
      out.append(f"  {name}")
      for name, desc in presets(path).items():
        out.append(f"    {name or '(none)':10s} {desc}")
    out.append("Give --config=NAME[:PRESET] --help for the config's fields and their defaults.")
    return "\n".join(out)
  check_config_arg(value)
  path, preset = configs.split(configs.resolve(value))
  config = configs.load_module(path).get_config(preset or None)
  shown = configs.split(value)[0]
  out = [f"Presets of {shown} (--config={shown}:PRESET):"]
  for name, desc in presets(path).items():
    out.append(f"  {name or '(none)':10s} {desc}")
  out.append(f"Fields of {value} with their defaults (override with --config.FIELD=VALUE; "
             "--print_config prints every value):")
  for key, v in config.items():
    if hasattr(v, "items"):
      out.append(f"  {key + '.*':22s} {', '.join(v.keys())}")
    else:
      out.append(f"  {key:22s} {_format_value(v)}")
  return "\n".join(out)


def help_text(doc: str | None, argv: Sequence[str], has_config: bool) -> str:
  """The launcher's docstring plus, for config launchers, :func:`config_help`."""
  parts = [(doc or "").strip()]
  if has_config:
    parts.append("  --print_config  print the resolved config (file, preset, overrides) as JSON and exit.")
    parts.append(config_help(config_arg(argv)))
  return "\n\n".join(p for p in parts if p) + "\n"


def format_config(config) -> str:
  """The resolved config as indented JSON (the ``config`` block of ``<workdir>/config.json``)."""
  return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=False)


# ---------------------------------------------------------------- run
def _print_error(message: str, hint: str | None = None) -> None:
  print(f"error: {message}", file=sys.stderr)
  if hint:
    print(hint, file=sys.stderr)
  sys.stderr.flush()


def run(main: Callable[[list[str]], Any], *, config_flag=None, required: Sequence[str] = (),
        doc: str | None = None) -> None:
  """``absl.app.run(main)`` with the conventions of this module's docstring.

  Args:
    main: the launcher's ``main(argv)``.
    config_flag: the launcher's ``config_flags.DEFINE_config_file`` holder, if it has one (adds
      ``--print_config`` and the config part of ``--help``).
    required: names of flags that must be given (checked after ``--help``/``--print_config``, so
      those work without them).
    doc: help text (default: the ``__main__`` module's docstring).

  Exits with 0 after ``--help``/``--print_config``, 2 on a command-line error, 1 on a
  :class:`hpt_jax.errors.UserError` from ``main``.
  """
  doc = doc if doc is not None else sys.modules["__main__"].__doc__
  print_config = None
  if config_flag is not None:
    print_config = flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")
  hint = f"Run {os.path.basename(sys.argv[0])} --help for the flags" + (
      ", presets and config fields." if config_flag is not None else ".")

  def parse(argv: list[str]) -> list[str]:
    if any(a in _HELP_FLAGS for a in argv[1:]):
      try:
        sys.stdout.write(help_text(doc, argv, config_flag is not None))
      except UsageError as e:
        _print_error(str(e), hint)
        sys.exit(2)
      sys.exit(0)
    try:
      if config_flag is not None and config_arg(argv) is not None:
        check_config_arg(config_arg(argv))
      rest = flags.FLAGS(_resolve_argv(argv))
    except (UsageError, flags.Error, AttributeError, KeyError, OSError, ValueError, TypeError) as e:
      _print_error(str(e) if isinstance(e, UsageError) else _parse_error_message(e, argv), hint)
      sys.exit(2)
    if len(rest) > 1:
      _print_error(f"unexpected arguments: {' '.join(rest[1:])}", hint)
      sys.exit(2)
    if print_config is not None and print_config.value:
      if config_flag.value is None:
        _print_error("--print_config needs --config=FILE[:PRESET]", hint)
        sys.exit(2)
      print(format_config(config_flag.value))
      sys.exit(0)
    missing = [f"--{name}" for name in required if flags.FLAGS[name].value is None]
    if missing:
      _print_error(f"missing flag{'s' if len(missing) > 1 else ''} {', '.join(missing)}", hint)
      sys.exit(2)
    return rest

  def wrapped(argv: list[str]) -> Any:
    enable_compilation_cache()
    try:
      return main(argv)
    except UsageError as e:
      _print_error(f"{e}", hint)
      sys.exit(2)
    except errors.UserError as e:
      _print_error(f"{e}", None)
      sys.exit(1)

  app.run(wrapped, flags_parser=parse)

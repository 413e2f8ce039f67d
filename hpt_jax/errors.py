"""The library's error base classes: what a command-line tool reports in one line.

Every error that is about the user's input — a config field, a data or keypoint file, a
checkpoint, weights, a photo — derives from :class:`UserError`. Its message names the file, the
row or the field and says what to do; :func:`hpt_jax.cli.run` prints it as ``error: <message>``
on stderr and exits with status 1, without a traceback. Anything else is a bug and keeps its
traceback.

The concrete classes live next to the code that raises them (e.g.
:class:`hpt_jax.input_pipeline.patn_format.DataError`, :class:`hpt_jax.checkpoints.CheckpointNotFoundError`,
:class:`hpt_jax.weights.WeightsNotFoundError`); each also derives from the built-in exception a
caller would expect (``ValueError``, ``FileNotFoundError``, …), so ``except ValueError`` still works.
"""


class UserError(Exception):
  """An error the user can fix from its message alone (bad input, missing file, wrong field)."""


class ConfigError(UserError, ValueError):
  """A config field has a value the code cannot use; the message names the field (``data.stored_size``)."""


class MissingFileError(UserError, FileNotFoundError):
  """A file the user named (or must create first, e.g. by ``launch/fetch_models.py`` or an
  evaluation) does not exist; the message names it and what makes it."""


class MissingDependencyError(UserError, ImportError):
  """An optional dependency of the feature in use is not installed; the message names the pip extra
  that installs it (``pyproject.toml`` ``[project.optional-dependencies]``)."""


def missing_extra(feature: str, extra: str, error: ImportError) -> MissingDependencyError:
  """The error for ``feature`` failing to import an optional package.

  Args:
    feature: what the user tried, e.g. ``"video targets and GIF/MP4 output"``.
    extra: the pip extra that installs it, e.g. ``"video"``.
    error: the ImportError raised by the import (its module name goes into the message).

  Returns:
    A :class:`MissingDependencyError` to raise ``from error``: ``<feature> needs the Python
    package '<module>', which is not installed: pip install 'hpt-jax[<extra>]' (in a checkout:
    pip install -e '.[<extra>]')``.
  """
  module = (getattr(error, "name", None) or str(error)).split(".")[0]
  return MissingDependencyError(
      f"{feature} needs the Python package {module!r}, which is not installed: "
      f"pip install 'hpt-jax[{extra}]' (in a checkout: pip install -e '.[{extra}]')")

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

"""Helpers of the notebooks (``notebooks/demo.ipynb``, ``notebooks/train_and_compare.ipynb``).

What a notebook needs beyond the library's own entry points (:mod:`hpt_jax.inference`,
:mod:`hpt_jax.transfer`, :mod:`hpt_jax.evaluation`):

* :func:`train` — trains a config in a run folder as ``hpt-train`` does (the same function,
  :func:`hpt_jax.commands.train.train`, in a background thread of the kernel, so no second process
  competes for the GPU or TPU), redrawing a loss plot from the run's TensorBoard events as it goes;
* :func:`plot_scalars` — a figure of a run's TensorBoard scalars (:func:`hpt_jax.runs.event_scalars`);
* :func:`show_images` — uint8 images side by side with titles;
* :func:`fetch_checkpoint` — a run folder or exported model given as a path or as the URL of a
  ``.zip`` / ``.tar.gz`` of one;
* :func:`in_colab`.

Figures are drawn with matplotlib's object interface (no pyplot state) and displayed as PNG, so
they look the same in Colab, Jupyter and a saved notebook. Needs ``matplotlib`` and ``IPython``
(both in Colab; ``pip install 'hpt-jax[notebook]'`` elsewhere). Imports nothing from
``hpt_jax.train`` (training modules load through :mod:`hpt_jax.registry`).
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Mapping, Sequence

import numpy as np

from hpt_jax import errors, runs

#: Loss tags plotted by default: the totals and L1 terms of every family and stage prefix.
DEFAULT_TAG_ENDINGS = ("total", "l1", "epe", "loss")


def in_colab() -> bool:
  """True inside a Google Colab runtime."""
  return "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG") is not None


def _matplotlib():
  try:
    from matplotlib.figure import Figure
    from IPython import display
  except ImportError as e:
    raise errors.missing_extra("notebook figures", "notebook", e) from e
  return Figure, display


def figure_png(fig) -> bytes:
  """A matplotlib figure as PNG bytes (100 dpi, tight)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  return buf.getvalue()


def loss_tags(tags: Sequence[str]) -> list[str]:
  """The tags :func:`plot_scalars` draws by default: those whose last part ends with one of
  :data:`DEFAULT_TAG_ENDINGS` (e.g. ``refined/total``, ``level_64x44/l1``, ``flow/epe``),
  gradient norms and rates left out; all tags if none matches."""
  picked = [t for t in tags if t.rsplit("/", 1)[-1].endswith(DEFAULT_TAG_ENDINGS)
            and not t.rsplit("/", 1)[-1].startswith(("grad_norm", "lr"))]
  return sorted(picked or tags)


def plot_scalars(scalars: Mapping[str, Sequence[tuple[int, float]]], tags: Sequence[str] | None = None,
                 title: str = "", columns: int = 4):
  """One small plot per scalar tag (value against step).

  Args:
    scalars: ``{tag: [(step, value), ...]}``, e.g. :func:`hpt_jax.runs.event_scalars`.
    tags: which tags (default :func:`loss_tags`); absent ones are skipped.
    title: the figure's title.
    columns: plots per row.

  Returns:
    a ``matplotlib.figure.Figure`` (a single "no scalars yet" panel when there are none).
  """
  Figure, _ = _matplotlib()
  tags = [t for t in (loss_tags(list(scalars)) if tags is None else tags) if t in scalars]
  n = max(len(tags), 1)
  cols = min(columns, n)
  rows = (n + cols - 1) // cols
  fig = Figure(figsize=(3.2 * cols, 2.3 * rows + (0.4 if title else 0)))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.ravel()[len(tags):]:
    ax.axis("off")
  if not tags:
    axes[0, 0].text(0.5, 0.5, "no scalars yet", ha="center", va="center")
  for ax, tag in zip(axes.ravel(), tags):
    points = [(s, v) for s, v in scalars[tag] if v is not None]
    ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 20 else None)
    ax.set_title(tag, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def show_figure(fig, handle=None):
  """Displays a figure as a PNG; with ``handle`` (from an earlier call) replaces that output in
  place. Returns the display handle."""
  _, display = _matplotlib()
  image = display.Image(data=figure_png(fig), format="png")
  if handle is None:
    return display.display(image, display_id=True)
  handle.update(image)
  return handle


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, columns: int | None = None,
                height: float = 2.6, title: str = ""):
  """Displays uint8 ``[H, W, 3]`` images in a grid with titles.

  Args:
    images: the images (any sizes; each drawn at the same height).
    titles: one per image (optional).
    columns: images per row (default: all in one row).
    height: inches per row.
    title: the figure's title.
  """
  Figure, _ = _matplotlib()
  n = len(images)
  cols = min(columns or n, n)
  rows = (n + cols - 1) // cols
  aspect = max(img.shape[1] / img.shape[0] for img in images)
  fig = Figure(figsize=(cols * height * aspect + 0.2, rows * (height + 0.3)))
  axes = fig.subplots(rows, cols, squeeze=False)
  for i, ax in enumerate(axes.ravel()):
    ax.axis("off")
    if i < n:
      ax.imshow(np.asarray(images[i], np.uint8))
      if titles is not None:
        ax.set_title(titles[i], fontsize=9)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  show_figure(fig)


def _async_raise(thread: threading.Thread, exc_type) -> None:
  """Raises ``exc_type`` inside ``thread`` at its next Python instruction (CPython)."""
  ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def train(config: str, workdir: str, overrides: Mapping[str, object] | None = None, *,
          plot: bool = True, refresh_s: float = 5.0, tags: Sequence[str] | None = None, quiet: bool = True) -> str:
  """Trains like ``hpt-train --config=CONFIG --workdir=WORKDIR --config.KEY=VALUE ...``, in this
  kernel, with a live plot of the losses.

  The run is the command's (:func:`hpt_jax.commands.train.train`): ``DIR/config.json``,
  checkpoints, TensorBoard events, samples, ``summary.json``, and a rerun resumes from the latest
  checkpoint (a finished run returns at once). It runs in a background thread; every
  ``refresh_s`` seconds the loss plot (:func:`plot_scalars` of :func:`hpt_jax.runs.event_scalars`)
  is redrawn in place. Interrupting the cell (Colab's stop button) interrupts the training
  between steps, which saves a checkpoint first, as Ctrl-C does for the command.

  Args:
    config: a ``--config`` value: a packaged config name with its preset (``deepfashion_drn:cpu``)
      or a config file.
    workdir: the run folder.
    overrides: ``{'total_steps': 100, 'model.ngf': 8, ...}`` as ``--config.KEY=VALUE`` would set them.
    plot: draw the live plot (needs TensorBoard events, i.e. TensorFlow; otherwise the plot says
      "no scalars yet").
    refresh_s: seconds between plot updates.
    tags: the scalars plotted (default :func:`loss_tags`).
    quiet: hide the per-step log lines (warnings still show).

  Returns:
    the run summary text (printed too).

  Raises:
    whatever training raises (user errors are :class:`hpt_jax.errors.UserError`), and
    KeyboardInterrupt after an interrupted run saved its checkpoint.
  """
  from absl import logging
  from hpt_jax import cli, configs
  from hpt_jax.commands import train as train_command
  cli.enable_compilation_cache()
  cfg = configs.get(config)
  overrides = dict(overrides or {})
  if overrides:
    cfg.update_from_flattened_dict(overrides)
  source = {"config": config, "overrides": [f"--config.{k}={v}" for k, v in overrides.items()]}
  outcome: dict[str, object] = {}

  def work():
    try:
      outcome["summary"] = train_command.train(cfg, workdir, source)
    except BaseException as e:  # noqa: BLE001 - handed to the calling thread
      outcome["error"] = e

  verbosity = logging.get_verbosity()
  if quiet:
    logging.set_verbosity(logging.WARNING)
  handle = None
  started = time.perf_counter()
  thread = threading.Thread(target=work, name=f"train {workdir}", daemon=True)
  thread.start()
  try:
    while thread.is_alive():
      thread.join(refresh_s)
      if plot:
        elapsed = time.perf_counter() - started
        handle = show_figure(plot_scalars(runs.event_scalars(workdir), tags, f"{config} in {workdir}: "
                                          f"{elapsed:.0f} s"), handle)
  except KeyboardInterrupt:
    _async_raise(thread, KeyboardInterrupt)
    thread.join()
    raise
  finally:
    logging.set_verbosity(verbosity)
  if "error" in outcome:
    raise outcome["error"]
  summary = str(outcome["summary"])
  if plot:
    show_figure(plot_scalars(runs.event_scalars(workdir), tags, f"{config} in {workdir}: done"), handle)
  print(summary)
  return summary


def _find_run(folder: str) -> str | None:
  """The folder at or below ``folder`` holding ``config.json`` with ``checkpoints/``, or
  ``inference.json`` (shallowest first)."""
  for root, dirs, files in sorted(os.walk(folder), key=lambda x: x[0].count(os.sep)):
    dirs.sort()
    if "inference.json" in files or ("config.json" in files and "checkpoints" in dirs):
      return root
  return None


def fetch_checkpoint(location: str, dest: str = "checkpoints") -> str:
  """A model to restore, from a path or a URL.

  Args:
    location: a run folder or an exported model folder (:func:`hpt_jax.inference.export`, e.g.
      written by ``hpt-import-checkpoint`` from the authors' weights), or a ``.zip`` / ``.tar`` /
      ``.tar.gz`` of one, as a path or an ``http(s)://`` / ``file://`` URL.
    dest: where archives are downloaded and unpacked (``dest/<archive name without extension>/``,
      reused when already there).

  Returns:
    the folder holding ``config.json`` and ``checkpoints/``, or ``inference.json``, for
    :func:`hpt_jax.inference.load`.

  Raises:
    hpt_jax.errors.MissingFileError: nothing at ``location``, or no run or exported model inside it.
  """
  path = location
  if urllib.parse.urlparse(location).scheme in ("http", "https", "file"):
    name = os.path.basename(urllib.parse.urlparse(location).path) or "checkpoint"
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, name)
    if not os.path.exists(path):
      try:
        urllib.request.urlretrieve(location, path + ".part")
      except (OSError, ValueError) as e:
        raise errors.MissingFileError(f"{location}: cannot download ({type(e).__name__}: {e})") from None
      os.replace(path + ".part", path)
  if not os.path.exists(path):
    raise errors.MissingFileError(f"{location}: no such file or folder")
  if os.path.isfile(path):
    base = os.path.basename(path)
    for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
      if base.endswith(ext):
        base = base[:-len(ext)]
    folder = os.path.join(dest, base)
    if not os.path.isdir(folder):
      try:
        shutil.unpack_archive(path, folder + ".part")
      except (shutil.ReadError, ValueError) as e:
        raise errors.MissingFileError(f"{location}: not a .zip or .tar(.gz) archive ({e})") from None
      os.replace(folder + ".part", folder)
    path = folder
  found = _find_run(path)
  if found is None:
    raise errors.MissingFileError(f"{location}: holds no run (config.json with checkpoints/) and no exported "
                                  "model (inference.json)")
  return found

r"""Prepares a full pose-transfer data set for training: PATN's release files → TFDS ArrayRecord.

Usage::

  python launch/prepare_data.py --dataset=deepfashion --manual_dir=fashion_data [--data_dir=OUT]
  python launch/prepare_data.py --dataset=deepfashion --builder_config=inshop_256x256 --manual_dir=DIR  # DIAF
  python launch/prepare_data.py --dataset=market1501 --manual_dir=market_data [--data_dir=OUT]

1. Checks that every release file is in ``--manual_dir`` (a missing one is named with the path
   where it is expected; the expected layout is printed: ``MANUAL_DOWNLOAD_INSTRUCTIONS`` of
   :mod:`hpt_jax.input_pipeline.tfds_builders`).
2. Validates every row of the train and test annotation and pair CSVs and every image they name,
   as the folder pipeline does (:func:`hpt_jax.input_pipeline.patn_format.load_pair_examples`):
   with a progress bar and ETA (tqdm, as TFDS's own bars while writing). It prints the count of
   each fault type and file and line of the first few. With faults it stops
   (exit 1) unless ``--skip_bad`` (then those pairs are left out).
3. Writes the ArrayRecord files with TFDS, into a temporary
   ``incomplete.*`` folder renamed when complete: interrupting is safe, a rerun starts that
   split set again, and a rerun after success only prints the result.
4. Prints the size on disk and the config overrides that train on it (``data.source='tfds'``).

Flags:
  --dataset         deepfashion or market1501.
  --manual_dir      folder with the release files (PATN's fashion_data/ or market_data/), local or mounted.
  --data_dir        TFDS data folder to write (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); a local
                    or mounted folder (writing to gs:// directly fails in TFDS: tensorflow/datasets#10981).
  --builder_config  deepfashion: crop_256x176 (default; DRN, HPN) or inshop_256x256 (DIAF's framing);
                    market1501: crop_128x64.
  --skip_bad        build without the pairs that fail the checks (counted and printed).

Needs the ``tfds`` extra (``tensorflow-datasets``, ``array_record``, ``etils[epath]``), not
TensorFlow. The data are for non-commercial research only (the DeepFashion and Market-1501 terms).
"""

from __future__ import annotations

import os
import time

from absl import flags

from hpt_jax import cli, errors

_DATASET = flags.DEFINE_enum("dataset", None, ["deepfashion", "market1501"], "Which data set.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the release files (local or mounted).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder to write (default ~/tensorflow_datasets).")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None, "Builder config (default: the data set's first).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Leave out pairs that fail the checks instead of stopping.")

#: Messages printed per split (file and line of the first faults).
SHOWN_MESSAGES = 5

#: ``(train config, extra overrides)`` per builder config: the config to train with and its sizes.
_TRAIN_WITH = {
    "crop_256x176": ("deepfashion_drn", ()),
    "inshop_256x256": ("deepfashion_diaf", ("stored_size=256,256",)),
    "crop_128x64": ("deepfashion_drn", ("stored_size=128,64", "image_size=128,64")),
}


def overrides(tfds_name: str, data_dir: str, builder_config: str) -> list[str]:
  """The ``--config.*`` flags that train on a prepared data set (train split for ``data``, test for
  ``eval_data``)."""
  out = []
  for block, split in (("data", "train"), ("eval_data", "test")):
    out += [f"--config.{block}.source=tfds", f"--config.{block}.tfds_name={tfds_name}",
            f"--config.{block}.tfds_dir={data_dir}", f"--config.{block}.split={split}"]
    out += [f"--config.{block}.{o}" for o in _TRAIN_WITH.get(builder_config, ("", ()))[1]]
  return out


def _size(path) -> int:
  return sum(f.stat().length for f in path.iterdir() if f.is_file())   # the version folder is flat


def prepare(dataset: str, manual_dir: str, data_dir: str | None = None, builder_config: str | None = None,
            skip_bad: bool = False, echo=print, show_progress: bool = True) -> dict:
  """Validates the release files in ``manual_dir`` and writes the TFDS ArrayRecord data set.

  Args:
    dataset: ``'deepfashion'`` or ``'market1501'``.
    manual_dir: folder of the release files (local or mounted).
    data_dir: TFDS data folder (None = TFDS's default).
    builder_config: a config name of the builder (None = its default).
    skip_bad: leave out pairs with faults instead of raising.
    echo: where the report lines go.
    show_progress: progress bars with ETA (tqdm, on stderr) while checking and writing.

  Returns:
    ``{'name': 'builder/config', 'path': prepared folder, 'splits': {split: pairs}, 'bytes': size,
    'report': {split: {fault: count}}, 'overrides': [...], 'reused': bool}``.

  Raises:
    hpt_jax.errors.MissingDependencyError: no ``tensorflow-datasets`` (the ``tfds`` extra).
    hpt_jax.errors.MissingFileError: a release file is missing (named, where it is expected).
    hpt_jax.errors.ConfigError: an unknown data set or builder config.
    hpt_jax.errors.UserError: rows with faults and not ``skip_bad`` (counts and first messages).
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    import tqdm  # pylint: disable=import-outside-toplevel  # a dependency of tensorflow-datasets
    from hpt_jax.input_pipeline import tfds_builders  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.missing_extra("launch/prepare_data.py", "tfds", e) from e
  if not show_progress:
    tfds.disable_progress_bar()
  if dataset not in tfds_builders.BUILDERS:
    raise errors.ConfigError(f"--dataset={dataset!r}: expected one of {sorted(tfds_builders.BUILDERS)}")
  cls = tfds_builders.BUILDERS[dataset]
  configs = {c.name: c for c in cls.BUILDER_CONFIGS}
  builder_config = builder_config or cls.DEFAULT_CONFIG_NAME
  if builder_config not in configs:
    raise errors.ConfigError(f"--builder_config={builder_config!r}: {dataset} has {', '.join(configs)}")
  config = configs[builder_config]
  name = f"{cls.name}/{builder_config}"
  data_dir = os.fspath(data_dir) if data_dir else None
  try:
    tfds_builders.check_release(config, manual_dir, dataset)
  except errors.MissingFileError:
    echo(f"The manual folder needs the release files of {dataset}:\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    raise
  probe = cls(data_dir=data_dir, config=builder_config, file_format="array_record")
  result = {"name": name, "path": os.fspath(probe.data_path), "report": {}, "reused": probe.is_prepared()}
  if not result["reused"]:
    validated, bad = {}, 0
    for split in ("train", "test"):
      start = time.perf_counter()
      echo(f"validating {split}: every row of {config.annotations[split]} and {config.pairs[split]} and "
           f"every image they name ...")
      examples, report = tfds_builders.validate_split(
          config, manual_dir, split, progress=lambda rows, s=split: tqdm.tqdm(
              rows, desc=f"checking {s} pairs", unit=" pairs", mininterval=1.0, disable=not show_progress))
      validated[split] = examples
      result["report"][split] = dict(report.counts)
      bad += report.total + report.skipped_pairs
      echo(f"  {split}: {len(examples)} valid pairs, {report.summary()} ({time.perf_counter() - start:.1f} s)")
      for message in report.messages[:SHOWN_MESSAGES]:
        echo(f"    {message}")
      if report.total > SHOWN_MESSAGES:
        echo(f"    ... and {report.total - SHOWN_MESSAGES} more")
    if bad and not skip_bad:
      faults = "; ".join(f"{s}: " + (", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "bad rows")
                         for s, c in result["report"].items() if c)
      raise errors.UserError(f"{manual_dir}: faults in the release files ({faults}; messages above): fix them, "
                             "or rerun with --skip_bad to build without those pairs")
    builder = cls(data_dir=data_dir, config=builder_config, file_format="array_record", validated=validated)
    echo(f"writing {name} to {os.fspath(builder.data_path)} (ArrayRecord; interrupt-safe: written to "
         "an incomplete.* folder, renamed when done)")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  else:
    builder = probe
    echo(f"{name} is already prepared in {result['path']}: nothing to do")
  result["splits"] = {s: int(info.num_examples) for s, info in builder.info.splits.items()}
  result["bytes"] = _size(builder.data_path)
  root = data_dir or os.fspath(builder.data_path.parent.parent.parent)   # <root>/<name>/<config>/<version>
  result["overrides"] = overrides(name, root, builder_config)
  pairs = sum(result["splits"].values())
  echo(f"prepared {name}: " + ", ".join(f"{s} {n} pairs" for s, n in result["splits"].items())
       + f"; {result['bytes'] / 1e6:.1f} MB ({result['bytes'] / max(1, 2 * pairs) * 1000 / 1e6:.1f} MB per 1,000 "
       f"stored images, 2 per pair) in {result['path']}")
  train_config = _TRAIN_WITH[builder_config][0]
  echo("train on it with:\n  python launch/train.py --config=" + train_config + " --workdir=runs/"
       + f"{dataset}_tfds \\\n    " + " \\\n    ".join(result["overrides"]))
  return result


def main(argv):
  del argv  # cli.run rejects extra arguments
  prepare(_DATASET.value, _MANUAL_DIR.value, _DATA_DIR.value, _BUILDER_CONFIG.value, _SKIP_BAD.value)


def run() -> None:
  """Console script ``hpt-prepare-data`` (and ``python launch/prepare_data.py``)."""
  cli.run(main, required=("dataset", "manual_dir"), doc=__doc__)


if __name__ == "__main__":
  run()

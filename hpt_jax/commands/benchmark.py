r"""Benchmarks one training step (DRN 1-1-3 cycle, one HPN level's step, one DIAF phase's step) and the input pipeline; prints one JSON line.

Usage::

  python launch/benchmark.py --config=deepfashion_drn:benchmark
  python launch/benchmark.py --config=deepfashion_drn:cpu --steps=5 --warmup=1
  python launch/benchmark.py --config=deepfashion_drn:benchmark --flops_only
  python launch/benchmark.py --config=deepfashion_drn:cpu --first_step   # time to first step
  python launch/benchmark.py --config=hpn_1024:benchmark --flops_only   # HPN 1024² level
  python launch/benchmark.py --config=deepfashion_diaf --config.perceptual.random_init=true \
      --config.batch_size=8 --flops_only                                              # DIAF generator phase

Flags:
  --config            ml_collections config (``file.py:preset``); every field can be overridden,
                      e.g. ``--config.batch_size=32 --config.dtype=float32``.
  --steps             timed steps (default 20) after ``--warmup`` untimed ones (default 3).
  --flops_only        compile only (FLOPs and the compiled memory estimate); nothing is executed,
                      so the full-size step can be measured on a CPU.
  --pipeline_batches  batches timed through the grain input pipeline on the real sample
                      (``config.data``, ``config.data.num_workers`` workers); 0 disables.
  --flops_from        'lowered' (default, seconds) or 'compiled' (a second full compile): which CPU
                      HLO the FLOP count comes from (see below).
  --output            optional file the JSON line is appended to.
  --level             HPN only: which level's step (default -1 = the last, 1024² in hpn_1024.py).
  --phase             DIAF only: flow | generator (default) | pixel_warp.
  --first_step        time to first step of the real training driver (see below); run it twice with
                      the same ``HPT_JAX_COMPILATION_CACHE=DIR`` for the cold and the warm figure.
  --generate_from     a trained workdir (or exported model): time inference (``hpt_jax.inference``
                      generate of one batch of eval pairs, stored frame in and out) instead of a
                      training step; ``--steps``/``--warmup`` count generate calls.

What is measured (one JSON object on stdout; logs go to stderr):

* **Step** = the family's ``benchmark_workload`` step, found through :mod:`hpt_jax.registry`:
  ``DRNTrainer.train_step`` (one full 1-1-3 cycle: G_P update, G_P+G_T update, K
  discriminator updates), ``HPNTrainer.train_step`` of one level, or one DIAF phase step, ``jax.jit(..., donate_argnums=0)``, state replicated
  (``NamedSharding(mesh, P())``) and the batch split over a 1-D ``'data'`` mesh of every device.
  Batches are synthetic (fixed seed); perceptual weights are random (``random_vgg_params`` warns).
* ``init_s`` (timed runs) / ``init_compile_s`` (``--flops_only``): the parameter initialisation as
  training compiles it (:func:`hpt_jax.parallel.initialize`: no XLA backend optimisation).
* ``compile_s``: ``lower`` + ``compile`` of that step (a cache load when the persistent compilation
  cache holds it: ``HPT_JAX_COMPILATION_CACHE``, on by default). ``step_s``: median wall time of the timed
  steps, each synchronised with ``jax.block_until_ready``; ``pairs_per_s = global_batch / step_s``.
* ``peak_memory_bytes``: ``device.memory_stats()['peak_bytes_in_use']`` (max over local devices)
  where the backend reports it (``peak_memory_source='memory_stats'``); otherwise (CPU, or
  ``--flops_only``) the compiled executable's ``memory_analysis()`` per device: temp + argument +
  output − alias (donated state buffers are reused for the new state, so they count once),
  ``peak_memory_source='compiled_estimate'``.
* ``flops_per_step``: XLA's cost analysis of the same step lowered for the **CPU** backend on one
  CPU device with the global batch (abstract ``jax.ShapeDtypeStruct`` arguments, nothing runs).
  Caveats handled here: XLA's GPU cost analysis omits convolutions, hence the CPU copy;
  ``HloCostAnalysis`` counts a ``while`` loop's body once, so the copy is traced with
  ``jax.lax.scan(..., unroll=True)`` so that a scanned loop (e.g. K discriminator updates) is
  counted K times; the timed step is the trainer's own (a trainer version that scanned its K = 3
  updates counted 21 % low at full size without this). By default the lowered HLO is analysed
  (seconds; 4.773e13 vs 4.758e13 from the compiled copy at full size); ``--flops_from=compiled``
  compiles the copy (a minute or more at full size on a CPU).
* ``utilisation = flops_per_step / step_s / (peak_flops_per_device × device_count)`` with the
  device's dense bf16 peak from :data:`PEAK_BF16_FLOPS` (null on CPU / unknown devices).
* ``pipeline_pairs_per_s``: :func:`hpt_jax.input_pipeline.pipeline.pipeline_throughput` on the configured
  data (decode + resize + heatmaps + batching), this process's share of ``global_batch`` per
  batch, ``pipeline_pairs_per_s`` is this process's rate; a failure there
  is recorded in ``pipeline_error`` and does not stop the benchmark.

``--first_step``: :func:`run_first_step_benchmark` — ``time_to_first_step_s`` from this process's
start to the end of the first training step (``first_step_s`` of it is the step's compilation or
cache load and its run), ``cache`` cold/warm/off.

Nothing here imports TensorFlow (no clu writers) except ``--first_step``, which runs the training
driver and its writers; ``tensorflow_imported`` in the output checks it.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import statistics
import sys
import time

_IMPORTED_AT = time.time()   # fallback process start for the time-to-first-step record
from absl import flags, logging
from ml_collections import config_flags
from hpt_jax import checkpoints, cli, configs, errors, parallel, runs

# Flag holders, defined by _define_flags() only when run as a script, so that importing this
# module (tests) does not claim flag names such as --config in the global absl registry.
F: dict = {}


def _define_flags() -> None:
  F["config"] = config_flags.DEFINE_config_file("config", configs.resolve("deepfashion_drn:benchmark"),
                                                "Config file (file.py:preset).", lock_config=True)
  F["steps"] = flags.DEFINE_integer("steps", 20, "Timed steps (after the warm-up).", lower_bound=1)
  F["warmup"] = flags.DEFINE_integer("warmup", 3, "Untimed steps before timing.", lower_bound=0)
  F["flops_only"] = flags.DEFINE_bool("flops_only", False,
                                      "Compile only: FLOPs and the compiled memory estimate, no execution.")
  F["pipeline_batches"] = flags.DEFINE_integer("pipeline_batches", 10,
                                               "Input-pipeline batches to time (0 disables).", lower_bound=0)
  F["flops_from"] = flags.DEFINE_enum("flops_from", "lowered", ["lowered", "compiled"],
                                      "FLOP count from the CPU-lowered HLO (fast) or the CPU-compiled one.")
  F["output"] = flags.DEFINE_string("output", None, "Optional file to append the JSON line to.")
  F["level"] = flags.DEFINE_integer("level", -1, "HPN only: level index to benchmark (-1 = the last).")
  F["phase"] = flags.DEFINE_string("phase", None, "DIAF only: flow | generator (default) | pixel_warp.")
  F["first_step"] = flags.DEFINE_bool(
      "first_step", False, "Time to first step: run the training driver (what launch/train.py runs) for "
      "one step per stage in a temporary workdir and time this process's start → its first step done.")
  F["generate_from"] = flags.DEFINE_string(
      "generate_from", None, "Time inference instead of training: hpt_jax.inference generate of the "
      "eval pairs with the model restored from this workdir (or exported folder).")


# Dense (no sparsity) bf16 peak FLOP/s per device, from the vendors' data sheets. Matched in order
# against the lower-cased ``device_kind``; the first hit wins.
PEAK_BF16_FLOPS = (
    ("h100 pcie", 756e12),
    ("h100", 989e12),        # H100 SXM
    ("h200", 989e12),
    ("a100", 312e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),       # v5p reports "TPU v5"
    ("tpu v6 lite", 918e12),  # v6e
    ("tpu v6e", 918e12),
)


def peak_bf16_flops(device) -> float | None:
  """Dense bf16 peak FLOP/s of one ``device`` from :data:`PEAK_BF16_FLOPS`; None for CPU/unknown."""
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for key, value in PEAK_BF16_FLOPS:
    if key in kind:
      return value
  return None


@contextlib.contextmanager
def unrolled_scans():
  """Temporarily makes ``jax.lax.scan`` fully unroll (for FLOP counting only; see module doc)."""
  import jax
  original = jax.lax.scan

  @functools.wraps(original)
  def scan(*args, **kwargs):
    kwargs["unroll"] = True
    return original(*args, **kwargs)

  jax.lax.scan = scan
  try:
    yield
  finally:
    jax.lax.scan = original


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per module
    return float(sum(c.get("flops", 0.0) for c in cost))
  return float(cost.get("flops", 0.0))


def count_flops_cpu(step_fn, state, batch, vgg_params, compiled: bool = False) -> float:
  """FLOPs of ``step_fn(state, batch, vgg_params)`` lowered for one CPU device (nothing runs).

  Arguments may be arrays or shape structs; they are replaced by ``jax.ShapeDtypeStruct`` on the
  first CPU device, so this works from a GPU/TPU process too. Scans are unrolled while tracing.

  Args:
    compiled: False (default): XLA's cost analysis of the lowered (unoptimised) HLO — seconds,
      within 0.2 % of the compiled count on the tiny preset; True: of the compiled executable
      (an extra full compile: minutes at full size on a CPU).
  """
  import jax
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu),
                          (state, batch, vgg_params))
  with unrolled_scans():
    lowered = jax.jit(step_fn).lower(*abstract)
  return _cost_flops(lowered.compile() if compiled else lowered)


def compiled_memory(compiled) -> dict | None:
  """Per-device sizes from ``compiled.memory_analysis()`` and their estimate (temp+arg+out−alias)."""
  try:
    m = compiled.memory_analysis()
  except Exception as e:  # some backends do not implement it
    logging.warning("memory_analysis unavailable: %s", e)
    return None
  if m is None:
    return None
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
         for k in ("temp", "argument", "output", "alias", "generated_code")}
  out["estimate"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
  return out


def measure_pipeline(config, num_batches: int, workload: dict | None = None) -> dict:
  """Input-pipeline pairs/s on ``config.data`` (guarded: errors are returned, not raised)."""
  out = {"pipeline_pairs_per_s": None, "pipeline_batches": num_batches,
         "pipeline_num_workers": int(config.data.num_workers)}
  if num_batches <= 0:
    return out
  try:
    import jax
    from hpt_jax.input_pipeline import pipeline
    if hasattr(pipeline, "load_examples"):
      examples = pipeline.load_examples(config.data, logger=logging.info)
    else:
      from hpt_jax.input_pipeline import patn_format
      d = config.data
      examples, _ = patn_format.load_pair_examples(
          d.images, d.annotations, d.pairs, keypoint_x_offset=d.keypoint_x_offset,
          skip_bad=d.skip_bad_examples)
    extra = {}
    image_size = tuple(config.data.image_size)
    if workload is not None and config.model_name == "hpn":
      image_size = workload["image_size"]
      extra = dict(pose_maps=False, local_descriptors=workload["trainer"].num_local)
    if config.model_name == "diaf":
      from hpt_jax.input_pipeline import diaf_pipeline
      ds = diaf_pipeline.create_diaf_dataset(
          examples, config, config.data, batch_size=config.batch_size // jax.process_count(), seed=config.seed,
          train=True, shard_index=jax.process_index(), shard_count=jax.process_count())
    else:
      ds = pipeline.create_pair_dataset(
          examples, image_size=image_size, sigma=config.pose.sigma,
          batch_size=config.batch_size // jax.process_count(), seed=config.seed, train=True,
          flip=config.data.flip, shard_index=jax.process_index(), shard_count=jax.process_count(),
          num_workers=config.data.num_workers, **extra)
    it = iter(ds)
    out["pipeline_pairs_per_s"] = float(pipeline.pipeline_throughput(it, num_batches, warmup_batches=1))
    out["pipeline_examples"] = len(examples)
    close = getattr(it, "close", None)
    if callable(close):
      close()
  except Exception as e:  # noqa: BLE001 - the step figures must survive a pipeline problem
    logging.exception("input-pipeline measurement failed")
    out["pipeline_error"] = f"{type(e).__name__}: {e}"
  return out


def build_workload(config, level: int | None = None, phase: str | None = None) -> dict:
  """The family's benchmark workload (``benchmark_workload`` of its training module, found through
  :mod:`hpt_jax.registry`): trainer, init, synthetic batches, the step and record fields.

  DRN: one 1-1-3 cycle at ``config.data.image_size``. HPN: one step of level ``level`` (default
  the last, e.g. 1024² for ``hpt_jax/configs/hpn_1024.py``). DIAF: one step of ``phase`` (default the
  generator phase).

  Raises:
    hpt_jax.errors.ConfigError: unknown ``config.model_name``, level or phase (named).
  """
  from hpt_jax import registry
  return registry.get(config.model_name).train_module().benchmark_workload(config, level=level, phase=phase)


def run_benchmark(config, *, steps: int, warmup: int, flops_only: bool, pipeline_batches: int,
                  flops_from: str = "lowered", config_name: str = "", overrides: dict | None = None,
                  level: int | None = None, phase: str | None = None) -> dict:
  """Runs the measurements and returns the JSON-able record (see the module docstring)."""
  import jax
  import numpy as np

  devices = jax.devices()
  mesh = parallel.make_mesh()  # 1-D 'data' mesh over every device, Auto axes
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise errors.ConfigError(f"batch_size={config.batch_size} (global) must be divisible by the {n_dev} devices")
  rep = parallel.replicated(mesh)
  workload = build_workload(config, level, phase)
  image_size = workload["image_size"]
  from hpt_jax import weights
  vgg_params = weights.load_perceptual_params(config)

  record = {
      "model": config.model_name,
      "config": config_name,
      "preset": config_name.partition(":")[2],
      "overrides": overrides or {},
      "mode": "flops_only" if flops_only else "timed",
      "platform": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "device_count": n_dev,
      "process_count": jax.process_count(),
      "global_batch": int(config.batch_size),
      "image_size": list(image_size),
      "dtype": config.dtype,
      "jax_version": jax.__version__,
      "date": datetime.date.today().isoformat(),
  }
  record.update(workload["record"])

  train_step = workload["step"]
  step_fn = jax.jit(train_step, donate_argnums=0, out_shardings=(rep, rep))
  rng = jax.random.PRNGKey(config.seed)
  host_batch = workload["batch"](config.batch_size // jax.process_count())
  extra = workload["extra"](vgg_params)
  if flops_only:
    if workload["traceable_init"]:
      t0 = time.perf_counter()
      parallel.compile_init(workload["init"], rng, out_shardings=rep)
      record["init_compile_s"] = time.perf_counter() - t0
      state = checkpoints.abstract_like(jax.eval_shape(workload["init"], rng), rep)
    else:
      state = checkpoints.abstract_like(workload["init"](rng), rep)
    batch = checkpoints.abstract_like(host_batch, parallel.batch_sharding(mesh))
    vgg = checkpoints.abstract_like(extra, rep)
  else:
    if workload["traceable_init"]:
      t0 = time.perf_counter()
      state = parallel.initialize(workload["init"], rng, out_shardings=rep, what=config.model_name)
      record["init_s"] = time.perf_counter() - t0
    else:
      state = jax.device_put(workload["init"](rng), rep)
    batch = parallel.shard_batch(host_batch, mesh)
    vgg = jax.device_put(extra, rep)
  record["params"] = runs.count_params(state.params)

  logging.info("compiling the step (%s, batch %d, %s, %s) ...", config_name, config.batch_size,
               image_size, config.dtype)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, vgg).compile()
  record["compile_s"] = time.perf_counter() - t0
  logging.info("compiled in %.1f s", record["compile_s"])
  mem = compiled_memory(compiled)
  record["compiled_memory_bytes"] = mem

  logging.info("counting FLOPs on a CPU copy of the step (scans unrolled) ...")
  t0 = time.perf_counter()
  flops = count_flops_cpu(train_step, state, batch, vgg, compiled=flops_from == "compiled")
  record["flops_from"] = f"cpu_{flops_from}_unrolled_scan"
  record["flops_count_s"] = time.perf_counter() - t0
  record["flops_per_step"] = flops
  record["flops_per_pair"] = flops / config.batch_size

  peak_dev = peak_bf16_flops(devices[0])
  record["peak_bf16_flops_per_device"] = peak_dev
  record["step_s_lower_bound_at_peak"] = flops / (peak_dev * n_dev) if peak_dev else None

  record.update({"step_s": None, "step_s_mean": None, "step_s_min": None, "step_s_all": None,
                 "pairs_per_s": None, "utilisation": None})
  peak_mem, source = None, None
  if not flops_only:
    times = []
    for i in range(warmup + steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch, vgg)
      jax.block_until_ready((state, metrics))
      dt = time.perf_counter() - t0
      if i >= warmup:
        times.append(dt)
    scalars = runs.host_scalars(metrics)
    record["finite_metrics"] = bool(all(np.isfinite(v) for v in scalars.values()))
    step_s = statistics.median(times)
    record.update({"step_s": step_s, "step_s_mean": statistics.fmean(times), "step_s_min": min(times),
                   "step_s_all": times, "pairs_per_s": config.batch_size / step_s,
                   "utilisation": (flops / step_s / (peak_dev * n_dev)) if peak_dev else None})
    stats = [d.memory_stats() for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s]
    if peaks and all(p is not None for p in peaks):
      peak_mem, source = int(max(peaks)), "memory_stats"
  if peak_mem is None and mem is not None:
    peak_mem, source = mem["estimate"], "compiled_estimate"
  record["peak_memory_bytes"] = peak_mem
  record["peak_memory_source"] = source
  record["steps"] = 0 if flops_only else steps
  record["warmup"] = 0 if flops_only else warmup

  record.update(measure_pipeline(config, pipeline_batches, workload))
  record["tensorflow_imported"] = "tensorflow" in sys.modules
  return record


def run_generate_benchmark(config, workdir: str, *, steps: int, warmup: int, config_name: str = "",
                           overrides: dict | None = None) -> dict:
  """Times :meth:`hpt_jax.inference.PoseTransferModel.generate` (stored frame in and out).

  One batch of ``model.batch_size`` eval pairs (``config.eval_data``, repeated if fewer) is read
  once; ``prepare_s_per_pair`` is the host framing (resize/pad, pose maps); ``generate_s`` the
  median wall time of ``generate_batch`` on it (transfer, jitted generation with the inverse
  framing, fetch), after ``warmup`` untimed calls; ``compile_s`` the first call.
  """
  import jax
  from hpt_jax import inference
  from hpt_jax.input_pipeline import pipeline
  t0 = time.perf_counter()
  model = inference.load(config, workdir)
  restore_s = time.perf_counter() - t0
  examples = pipeline.load_examples(config.eval_data)
  n = model.batch_size
  examples = (examples * (-(-n // len(examples))))[:n]
  inputs = inference.stored_frame_pairs(examples)
  t0 = time.perf_counter()
  batch = model.prepare(*inputs)
  prepare_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  model.generate_batch(batch)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    model.generate_batch(batch)
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  step = statistics.median(times)
  return {"mode": "generate", "model": model.family, "description": model.description(), "config": config_name,
          "overrides": overrides or {}, "workdir": os.path.abspath(workdir), "platform": jax.devices()[0].platform,
          "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(), "batch": n,
          "model_size": list(model.model_size), "stored_size": list(model.stored_size), "dtype": config.dtype,
          "restore_s": restore_s, "compile_s": compile_s, "prepare_s_per_pair": prepare_s / n,
          "generate_s": step, "generate_s_per_pair": step / n, "generate_s_all": times,
          "pairs_per_s": n / step, "jax_version": jax.__version__, "date": datetime.date.today().isoformat(),
          "tensorflow_imported": "tensorflow" in sys.modules}


def one_step_config(config):
  """A copy of ``config`` that trains one step per stage (DRN ``total_steps``, HPN
  ``steps_per_level``, DIAF ``phases.*.total_steps``) without periodic evaluation."""
  config = config.copy_and_resolve_references()
  if "phases" in config:
    for phase in config.phases:
      config.phases[phase].total_steps = 1
  elif "steps_per_level" in config:
    config.steps_per_level = 1
  else:
    config.total_steps = 1
  if "eval_every_steps" in config:
    config.eval_every_steps = 0
  return config


def process_start_time() -> float:
  """``time.time()`` at which this process started (psutil; else when this module was imported)."""
  try:
    import psutil
    return psutil.Process().create_time()
  except ImportError:
    return _IMPORTED_AT


def run_first_step_benchmark(config, *, config_name: str = "", overrides: dict | None = None,
                             cache_dir: str | None = None) -> dict:
  """Time to first step of the real training driver, cold or warm compilation cache.

  Runs ``registry.get(config.model_name).train_module().train_and_evaluate`` on
  :func:`one_step_config` in a temporary workdir (deleted afterwards) and reads the first stage's
  record from its ``summary.json``: ``time_to_first_step_s`` = end of the first step − process
  start (interpreter, imports, data loading, weights, parameter initialisation, TensorBoard
  writer, compilation and run of the step); ``first_step_s`` = the first step's call (compilation
  or cache load + run); ``before_first_step_s`` = the rest. ``cache`` is ``cold`` when the
  compilation cache folder had no entries at the start, ``warm`` otherwise, ``off`` when disabled.
  The driver creates clu writers, which import TensorFlow where it is installed (as training does).
  """
  import shutil
  import tempfile

  import jax
  from hpt_jax import registry
  entries = len(os.listdir(cache_dir)) if cache_dir and os.path.isdir(cache_dir) else 0
  workdir = tempfile.mkdtemp(prefix="hpt_jax_first_step_")
  try:
    registry.get(config.model_name).train_module().train_and_evaluate(one_step_config(config), workdir)
    stages = runs.read_summary(workdir).get("stages", {})
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  name, first = min(stages.items(), key=lambda kv: kv[1]["first_step_time"])
  ttfs = first["first_step_time"] - process_start_time()
  return {"mode": "first_step", "model": config.model_name, "config": config_name, "overrides": overrides or {},
          "stage": name, "cache": "off" if not cache_dir else ("warm" if entries else "cold"),
          "cache_dir": cache_dir, "cache_entries_before": entries,
          "time_to_first_step_s": round(ttfs, 2), "first_step_s": first["first_step_s"],
          "before_first_step_s": round(ttfs - first["first_step_s"], 2),
          "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
          "device_count": jax.device_count(), "jax_version": jax.__version__,
          "date": datetime.date.today().isoformat()}


def main(argv):
  del argv  # cli.run rejects extra arguments
  import jax
  parallel.maybe_initialize_distributed()
  config_name = cli.config_arg(sys.argv) or "deepfashion_drn:benchmark"
  if F["first_step"].value:
    record = run_first_step_benchmark(F["config"].value, config_name=config_name, overrides=cli.config_overrides(),
                                      cache_dir=jax.config.jax_compilation_cache_dir)
  elif F["generate_from"].value:
    record = run_generate_benchmark(F["config"].value, F["generate_from"].value, steps=F["steps"].value,
                                    warmup=F["warmup"].value, config_name=config_name, overrides=cli.config_overrides())
  else:
    record = run_benchmark(F["config"].value, steps=F["steps"].value, warmup=F["warmup"].value,
                           flops_only=F["flops_only"].value, pipeline_batches=F["pipeline_batches"].value,
                           flops_from=F["flops_from"].value, config_name=config_name, overrides=cli.config_overrides(),
                           level=F["level"].value, phase=F["phase"].value)
  line = json.dumps(record, sort_keys=True, default=str)
  if jax.process_index() == 0:
    print(line, flush=True)
    if F["output"].value:
      os.makedirs(os.path.dirname(os.path.abspath(F["output"].value)), exist_ok=True)
      with open(F["output"].value, "a") as f:
        f.write(line + "\n")


def run() -> None:
  """Console script ``hpt-benchmark`` (and ``python launch/benchmark.py``)."""
  _define_flags()
  cli.run(main, config_flag=F["config"], doc=__doc__)


if __name__ == "__main__":
  run()

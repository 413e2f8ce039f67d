"""launch/benchmark.py end to end on the tiny preset (CPU, one subprocess, ~1 min on 2 cores)."""

import json
import math
import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FIELDS = (
    "model", "config", "preset", "overrides", "platform", "device_kind", "device_count", "global_batch",
    "image_size", "dtype", "compile_s", "step_s", "step_s_all", "pairs_per_s", "peak_memory_bytes",
    "peak_memory_source", "compiled_memory_bytes", "flops_per_step", "flops_per_pair", "flops_from",
    "utilisation", "peak_bf16_flops_per_device", "step_s_lower_bound_at_peak", "pipeline_pairs_per_s",
    "pipeline_num_workers", "tensorflow_imported",
)


def test_benchmark_tiny(tmp_path):
  out_file = tmp_path / "bench.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, os.path.join(_REPO, "launch", "benchmark.py"),
         "--config=deepfashion_drn:tiny", "--steps=2", "--warmup=1", "--pipeline_batches=2",
         "--config.seed=3", f"--output={out_file}"]
  proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert len(lines) == 1, proc.stdout
  rec = json.loads(lines[0])
  assert json.loads(out_file.read_text().strip()) == rec  # --output appends the same line

  missing = [f for f in _FIELDS if f not in rec]
  assert not missing, missing
  assert rec["model"] == "drn" and rec["preset"] == "tiny" and rec["mode"] == "timed"
  assert rec["overrides"] == {"seed": 3}
  assert rec["platform"] == "cpu" and rec["device_count"] >= 1
  assert rec["global_batch"] == 2 and rec["image_size"] == [32, 24] and rec["dtype"] == "float32"
  assert rec["compile_s"] > 0
  assert rec["step_s"] > 0 and len(rec["step_s_all"]) == 2
  assert min(rec["step_s_all"]) <= rec["step_s"] <= max(rec["step_s_all"])
  assert math.isclose(rec["pairs_per_s"], rec["global_batch"] / rec["step_s"], rel_tol=1e-9)
  # Tiny step: > 1e8 FLOPs (the 1-1-3 cycle with VGG up to relu2_1), counted per pair consistently.
  assert rec["flops_per_step"] > 1e8
  assert math.isclose(rec["flops_per_pair"] * rec["global_batch"], rec["flops_per_step"], rel_tol=1e-9)
  assert rec["flops_from"] == "cpu_lowered_unrolled_scan"
  assert rec["peak_memory_bytes"] > 0 and rec["peak_memory_source"] == "compiled_estimate"
  mem = rec["compiled_memory_bytes"]
  assert mem["estimate"] == mem["temp"] + mem["argument"] + mem["output"] - mem["alias"]
  # CPU has no bf16 peak in the table: utilisation and the peak-rate bound are null.
  assert rec["utilisation"] is None and rec["peak_bf16_flops_per_device"] is None
  assert rec["step_s_lower_bound_at_peak"] is None
  assert rec["finite_metrics"] is True
  # The input pipeline is measured, or its failure is recorded without stopping the benchmark.
  assert (rec["pipeline_pairs_per_s"] or 0) > 0 or isinstance(rec.get("pipeline_error"), str), rec
  assert rec["tensorflow_imported"] is False


def test_flops_count_includes_every_discriminator_update():
  """The FLOP count unrolls the trainer's lax.scan (XLA counts a while body once)."""
  import jax
  import jax.numpy as jnp
  from hpt_jax.commands import benchmark

  def f(x, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)[0]

  x = jnp.ones((64, 64))
  assert benchmark.count_flops_cpu(lambda s, b, v: f(s, b), x, x, {}) == 3 * 2 * 64 ** 3


def test_peak_table():
  import types
  from hpt_jax.commands import benchmark

  def dev(kind, platform="gpu"):
    return types.SimpleNamespace(device_kind=kind, platform=platform)

  assert benchmark.peak_bf16_flops(dev("NVIDIA H100 80GB HBM3")) == 989e12
  assert benchmark.peak_bf16_flops(dev("NVIDIA H200")) == 989e12
  assert benchmark.peak_bf16_flops(dev("NVIDIA A100-SXM4-80GB")) == 312e12
  assert benchmark.peak_bf16_flops(dev("TPU v5 lite", "tpu")) == 197e12
  assert benchmark.peak_bf16_flops(dev("TPU v6 lite", "tpu")) == 918e12
  assert benchmark.peak_bf16_flops(dev("TPU v4", "tpu")) == 275e12
  assert benchmark.peak_bf16_flops(dev("cpu", "cpu")) is None


def test_hpn_workload_is_the_last_level_step():
  """--config=hpn_1024 benchmarks the 1024² level: 44 boxes, local discriminator."""
  import jax
  from hpt_jax.commands import benchmark
  from hpt_jax.configs import hpn_1024
  config = hpn_1024.get_config("tiny")
  w = benchmark.build_workload(config)
  assert w["image_size"] == (1024, 1024)
  assert w["record"] == {"level": "level_1024x1024", "local_descriptors": 44, "local_discriminator": True}
  batch = w["batch"](2)
  assert batch["source_image"].shape == (2, 1024, 1024, 3) and batch["target_boxes"].shape == (2, 44, 4)
  state = jax.eval_shape(w["init"], jax.random.PRNGKey(0))
  assert "local_disc" in state.params and "to_rgb_1024x1024" in state.params["generator"]
  assert benchmark.build_workload(config, level=1)["image_size"] == (128, 128)

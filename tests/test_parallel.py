"""Data parallelism: one DRN cycle on 8 (simulated CPU) devices equals the same cycle on 1 device.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect if it is set before JAX
initialises its backends, and pytest has usually initialised JAX already (other test modules), so
the check runs in a fresh interpreter (this file's ``_child`` function, started with
``python -c``) with ``JAX_PLATFORMS=cpu``.

The check (tiny preset, global batch 8, dropout left on):

* the same initial state (one ``init_state`` call, copied to both meshes) and the same global
  batch go through ``jax.jit(trainer.train_step, donate_argnums=0)`` with the state replicated
  (``NamedSharding(mesh, P())``) and the batch split over ``'data'`` (``parallel.shard_batch``), once on
  a mesh of all 8 devices and once on a 1-device mesh;
* every parameter of every network, every optimiser moment and every metric agree (rtol 1e-4,
  atol 1e-5: the 8-device step sums per-device partial gradients in a different order);
* the 8-device outputs really are replicated over 8 devices and the batch split 8 ways.

Dropout stays on: with ``jax_threefry_partitionable`` (default True since jax 0.5) the random
bits of ``jax.random.bernoulli`` do not depend on how the batch is sharded, so both runs draw
the same masks. The child asserts the flag is on, so a change of default shows up here.

The 8-device mesh is ``parallel.make_mesh()`` (the one training uses); it must have Auto axes, since
flax's dropout does not trace under Explicit ones (``jax.make_mesh``'s default), which the child
also checks.
"""

import json
import os
import subprocess
import sys
import textwrap

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DEVICES = 8

_CHILD = textwrap.dedent(r"""
import functools, json, sys
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from hpt_jax.configs import deepfashion_drn
from hpt_jax import parallel
from hpt_jax import weights
from hpt_jax.train import drn

N = int(sys.argv[1])
assert jax.device_count() == N, f"expected {N} CPU devices, got {jax.devices()}"
assert jax.config.jax_threefry_partitionable, "random bits would depend on the sharding"

config = deepfashion_drn.get_config("tiny")
config.batch_size = 8
assert config.model.dropout > 0 and config.model.d_dropout > 0  # dropout is exercised
h, w = config.data.image_size
trainer = drn.DRNTrainer(config)
vgg_host = weights.random_vgg_params(config.perceptual.network, jax.random.PRNGKey(1),
                                     tuple(config.perceptual.taps))
rng = np.random.default_rng(0)
host_batch = {
    "source_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32),
    "target_image": rng.uniform(-1, 1, (8, h, w, 3)).astype(np.float32),
    "source_pose": rng.uniform(0, 1, (8, h, w, 18)).astype(np.float32),
    "target_pose": rng.uniform(0, 1, (8, h, w, 18)).astype(np.float32),
}
# One initial state on the host; each run gets its own device copy (the step donates it). Compiled
# as training compiles it (parallel.initialize: backend optimisation level 0, seconds instead of
# minutes on CPU).
init_host = jax.device_get(parallel.initialize(
    functools.partial(trainer.init_state, image_shape=(h, w)), jax.random.PRNGKey(0),
    out_shardings=parallel.replicated(parallel.make_mesh()), what="test networks"))


def run(devices):
  mesh = parallel.make_mesh(devices)
  rep = parallel.replicated(mesh)
  state = jax.device_put(init_host, rep)
  batch = parallel.shard_batch(host_batch, mesh)
  vgg = jax.device_put(vgg_host, rep)
  step = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  new_state, metrics = step(state, batch, vgg)
  jax.block_until_ready((new_state, metrics))
  return mesh, batch, new_state, metrics


mesh8, batch8, state8, metrics8 = run(None)  # parallel.make_mesh(): every device
_, _, state1, metrics1 = run(jax.devices()[:1])

# Shardings of the 8-device run.
for x in jax.tree.leaves(state8):
  assert x.sharding.is_equivalent_to(NamedSharding(mesh8, P()), x.ndim), x.sharding
  assert len(x.sharding.device_set) == N and x.sharding.is_fully_replicated
for name, x in batch8.items():
  assert x.sharding.is_equivalent_to(NamedSharding(mesh8, P("data")), x.ndim), (name, x.sharding)
  assert len(x.addressable_shards) == N
  assert {s.data.shape[0] for s in x.addressable_shards} == {8 // N}, name
assert mesh8.devices.size == N and mesh8.axis_types == (jax.sharding.AxisType.Auto,), mesh8

s8, s1 = jax.device_get(state8), jax.device_get(state1)
m8, m1 = jax.device_get(metrics8), jax.device_get(metrics1)
report = {"compared": 0, "worst": [], "mismatch": []}


def compare(tag, a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (tag, a.shape, b.shape)
  report["compared"] += 1
  err = float(np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b)))) if a.size else 0.0
  report["worst"].append((err, tag))
  if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
    report["mismatch"].append(tag)


assert set(s8.params) == set(drn.NETWORKS)
for kind, t8, t1 in (("params", s8.params, s1.params), ("opt_state", s8.opt_state, s1.opt_state)):
  f8 = jax.tree_util.tree_flatten_with_path(t8)[0]
  f1 = jax.tree_util.tree_flatten_with_path(t1)[0]
  assert [p for p, _ in f8] == [p for p, _ in f1]
  for (path, a), (_, b) in zip(f8, f1):
    compare(kind + jax.tree_util.keystr(path), a, b)
# The parameters actually moved (the comparison is not of two untouched copies).
moved = [k for k in drn.NETWORKS
         if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s8.params[k]),
                                                         jax.tree.leaves(init_host.params[k])))]
assert moved == list(drn.NETWORKS), moved
assert set(m8) == set(m1)
for k in sorted(m8):
  compare("metrics/" + k, m8[k], m1[k])
compare("step", s8.step, s1.step)
compare("rng", s8.rng, s1.rng)
report["worst"] = sorted(report["worst"], reverse=True)[:5]
report["metrics"] = {k: float(m8[k]) for k in sorted(m8)}
print("RESULT " + json.dumps(report))
""")


def test_eight_device_step_equals_one_device_step():
  env = dict(os.environ)
  flag = f"--xla_force_host_platform_device_count={N_DEVICES}"
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(N_DEVICES)], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  tail = proc.stderr[-6000:]
  assert proc.returncode == 0, f"child failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{tail}"
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert line, f"no RESULT line:\n{proc.stdout[-2000:]}\n{tail}"
  report = json.loads(line[-1][len("RESULT "):])
  assert not report["mismatch"], (
      f"8-device vs 1-device differ in {report['mismatch']}; worst {report['worst']}")
  assert report["compared"] > 50, report

"""Test helpers: call a trainer exactly as ``train_and_evaluate`` does; random weights of any shape.

Same jit options, shardings and argument forms as the training driver, so the XLA programs the
tests need are the ones the persistent compilation cache (conftest.py) already holds from other
tests and subprocesses: a tiny DRN init or step is compiled once per suite, not once per test.
"""

import functools
import os

import jax
import numpy as np

from hpt_jax import parallel



def init_like_training(trainer, image_size, seed: int = 0):
  """``trainer.init_state`` compiled by :func:`hpt_jax.parallel.initialize` with replicated outputs
  on the default mesh, as in training."""
  rep = parallel.replicated(parallel.make_mesh())
  return parallel.initialize(functools.partial(trainer.init_state, image_shape=tuple(image_size)),
                         jax.random.PRNGKey(seed), out_shardings=rep, what="test networks")


def step_like_training(trainer, state, host_batch, vgg_params):
  """One ``trainer.train_step`` (state donated, batch sharded over 'data'), as in training."""
  mesh = parallel.make_mesh()
  rep = parallel.replicated(mesh)
  fn = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  return fn(state, parallel.shard_batch(host_batch, mesh), jax.device_put(vgg_params, rep))


def random_like(abstract, seed):
  """Random arrays of a state's shapes (nothing compiled): N(0, 0.05²) floats, BatchNorm variances
  in [1, 2), integers 0."""
  rng = np.random.default_rng(seed)

  def draw(path, x):
    if not np.issubdtype(x.dtype, np.floating):
      return np.zeros(x.shape, x.dtype)
    if jax.tree_util.keystr(path).endswith("['var']"):
      return (1 + rng.random(x.shape)).astype(x.dtype)
    return (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def assert_same_tree(a, b) -> None:
  """Every leaf of two pytrees bit-identical (and at least one leaf)."""
  la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def saved_state(workdir, stage: str, step: int):
  """The train state checkpointed at ``<workdir>/checkpoints/<stage>/<step>`` as stored (Orbax
  restore without a target: nested dicts of NumPy arrays), for comparing two runs."""
  import orbax.checkpoint as ocp
  return ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", stage, str(step), "state"))

"""Test helpers that call a trainer exactly as ``train_and_evaluate`` does.

Same jit options, shardings and argument forms as the training driver, so the XLA programs the
tests need are the ones the persistent compilation cache (conftest.py) already holds from other
tests and subprocesses: a tiny DRN init or step is compiled once per suite, not once per test.
"""

import jax
from hpt_jax import parallel



def init_like_training(trainer, image_size, seed: int = 0):
  """``trainer.init_state`` jitted with replicated outputs on the default mesh (as in training)."""
  rep = parallel.replicated(parallel.make_mesh())
  return jax.jit(trainer.init_state, static_argnums=1, out_shardings=rep)(jax.random.PRNGKey(seed),
                                                                         tuple(image_size))


def step_like_training(trainer, state, host_batch, vgg_params):
  """One ``trainer.train_step`` (state donated, batch sharded over 'data'), as in training."""
  mesh = parallel.make_mesh()
  rep = parallel.replicated(mesh)
  fn = jax.jit(trainer.train_step, donate_argnums=0, out_shardings=(rep, rep))
  return fn(state, parallel.shard_batch(host_batch, mesh), jax.device_put(vgg_params, rep))

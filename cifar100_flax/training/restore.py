"""A trained workdir turned back into a model: the variables of its best checkpoint (the EMA
copy where the run kept one), without the optimiser."""

import jax
import jax.numpy as jnp
import ml_collections

from cifar100_flax import console
from cifar100_flax.config import checks
from cifar100_flax.data import cifar100
from cifar100_flax.training import checkpoints, recalibration, sharding, states


def restore_model(config: ml_collections.ConfigDict,
                  workdir: str) -> tuple[states.ModelState, dict]:
  """The evaluated model (the EMA weights where the run kept them) of `workdir`'s best checkpoint
  (the newest if none is marked best), without its optimiser, and the checkpoint's progress
  record. With config.eval.recalibration_images, its BatchNorm statistics are recalibrated unless
  the checkpoint's already were, on as many images at the same size."""
  checks.validate(config)
  model = states.create_model(config)
  variables = states.abstract_variables(model, config)
  step = jax.ShapeDtypeStruct((), jnp.int32)
  template = ({'ema': variables, 'step': step} if config.train.ema_decay
              else {**variables, 'step': step})
  with checkpoints.Checkpointer(workdir, read_only=True) as checkpointer:
    restored, progress = checkpointer.restore_model(template)
  restored = {**restored.pop('ema', {}), **restored}
  state = states.ModelState(apply_fn=model.apply, **restored)
  images = config.eval.recalibration_images
  if images and progress.get('recalibration') != recalibration.record(config):
    with console.phase(f'loading {config.data.name} to recalibrate BatchNorm'):
      train_images = cifar100.source(config).load_splits(config)['train'].images
    state = recalibration.recalibrate(state, train_images[:images], config,
                                      sharding.create_mesh())
  return state, progress

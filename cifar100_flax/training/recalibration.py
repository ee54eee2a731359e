"""BatchNorm recalibration ("precise BN"): running statistics re-estimated after training.

A running average (momentum 0.99 for the EfficientNets) trails the weights, and statistics
gathered at the training resolution misfit another test resolution (FixRes). This replaces each
BatchNorm layer's running mean and variance with their average over batches of training images,
as the evaluated model, in training mode, sees them at the evaluation size (unaugmented; dropout
and drop-path off). The models' BatchNorm update is linear in the old statistics,
new = m * old + (1 - m) * batch, so one pass from zeros gives (1 - m) * batch; m of each layer is
read once from a second pass from ones. No library does this for Flax (fvcore's
`update_bn_stats` is PyTorch's).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cifar100_flax import console
from cifar100_flax.data import preprocessing
from cifar100_flax.training import sharding, states


def _without_dropout(next_fun, args, kwargs, context):
  if isinstance(context.module, nn.Dropout) and context.method_name == '__call__':
    return args[0]
  return next_fun(*args, **kwargs)


def _updated_stats(model: states.ModelState, start: Any, images: jax.Array,
                   config: ml_collections.ConfigDict) -> Any:
  """The batch statistics after one training-mode pass over `images` from `start`."""
  with nn.intercept_methods(_without_dropout):
    _, updates = model.apply_fn({'params': model.params, 'batch_stats': start},
                                preprocessing.preprocess(images, config), train=True,
                                mutable=['batch_stats'])
  return updates['batch_stats']


def recalibrate(model: states.ModelState, images: np.ndarray, config: ml_collections.ConfigDict,
                mesh: Mesh | None = None) -> states.ModelState:
  """`model` with BatchNorm statistics averaged over `images` (uint8 [N, H, W, C]) in batches of
  config.data.batch_size (N rounded down to whole batches, at least one). Layers whose statistics do
  not move in training mode (frozen BatchNorm) keep theirs."""
  if not jax.tree.leaves(model.batch_stats):
    return model
  batch_size = min(config.data.batch_size, len(images))
  batches = [images[i:i + batch_size]
             for i in range(0, len(images) - batch_size + 1, batch_size)]
  updated = jax.jit(functools.partial(_updated_stats, config=config))
  zeros = jax.tree.map(jnp.zeros_like, model.batch_stats)
  ones = jax.tree.map(jnp.ones_like, model.batch_stats)
  put = functools.partial(sharding.shard_whole_batch, mesh=mesh) if mesh else jnp.asarray
  total = None
  for batch in console.progress(batches, 'recalibrating BatchNorm', total=len(batches)):
    from_zeros = updated(model, zeros, put(batch))
    total = from_zeros if total is None else jax.tree.map(jnp.add, total, from_zeros)
  momentum = jax.tree.map(jnp.subtract, updated(model, ones, put(batches[0])),
                          updated(model, zeros, put(batches[0])))
  batch_stats = jax.tree.map(
      lambda old, summed, m: jnp.where(m < 1 - 1e-6, summed / len(batches) / (1 - m), old),
      model.batch_stats, total, momentum)
  return model.replace(batch_stats=batch_stats)


def record(config: ml_collections.ConfigDict) -> dict:
  """What a recalibration with `config` was done on, as saved in a checkpoint's progress."""
  return {'image_size': preprocessing.eval_image_size(config),
          'images': config.eval.recalibration_images}

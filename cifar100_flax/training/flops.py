"""XLA's count of a training step's floating-point operations, for the FLOPs spent and MFU."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cifar100_flax.data import cifar100
from cifar100_flax.training import states, steps


def flops_per_step(config: ml_collections.ConfigDict, state: states.TrainState, batch_size: int,
                   image_size: int | None = None) -> float | None:
  """XLA's count of one training step's floating-point operations (all devices together) at
  `image_size` (default config.data.image_size), from the lowered step; None where the backend
  counts only compiled code (PJRT plugins: CUDA, ROCm, TPU), for `compiled_flops` to count.

  Counted on the model built with XLA's own convolutions: XLA cannot see into oneDNN's.
  """
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *cifar100.IMAGE_SHAPE), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
           'flip': jax.ShapeDtypeStruct((batch_size,), jnp.bool_)}
  xla_state = state.replace(apply_fn=states.create_model(config, 'xla').apply)
  step = jax.jit(functools.partial(steps.train_step, config=config, image_size=image_size))
  return _flops(step.lower(xla_state, batch).cost_analysis())


def compiled_flops(compiled: jax.stages.Compiled) -> float | None:
  """XLA's count of a compiled step's floating-point operations, or None where it has none."""
  return _flops(compiled.cost_analysis())


def _flops(cost: Any) -> float | None:
  # cost_analysis(): a dict; a list of one dict per executable in older JAX; None (or no 'flops')
  # where the backend does not count.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None

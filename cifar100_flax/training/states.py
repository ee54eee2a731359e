"""What training and evaluation act on: `TrainState` (with its EMA copy), `ModelState`
(a trained model without its optimiser), and the model built for the platform."""

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state

from cifar100_flax import models
from cifar100_flax.cpu import onednn
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.models import layer_set
from cifar100_flax.optim import optimizers, schedules


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # the run's key; step k uses fold_in(rng, k), so resuming needs nothing else
  # With config.train.ema_decay: {'params', 'batch_stats'} averaged over the steps; else None.
  ema: Any = None

  def with_variables(self, params: Any, batch_stats: Any) -> 'TrainState':
    """This state with other weights (pretrained ones), the EMA restarted from them."""
    ema = None if self.ema is None else _copy({'params': params, 'batch_stats': batch_stats})
    return self.replace(params=params, batch_stats=batch_stats, ema=ema)


def _copy(tree: Any) -> Any:
  # The EMA starts equal to the weights but in buffers of its own: the step donates both.
  return jax.tree.map(jnp.copy, tree)


class ModelState(flax.struct.PyTreeNode):
  """A trained model without its optimiser: what evaluation and inference need."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  params: Any
  batch_stats: Any
  step: jax.Array  # the training step the variables come from


def uses_cpu_speed_path(config: ml_collections.ConfigDict) -> bool:
  """config.cpu.speed_path, or (None) whether JAX's platform is the CPU."""
  if config.cpu.speed_path is not None:
    return config.cpu.speed_path
  return jax.default_backend() == 'cpu'


def create_model(config: ml_collections.ConfigDict,
                 conv_backend: str | None = None) -> nn.Module:
  """config.model.name, built from Flax's layers, or on the CPU speed path (uses_cpu_speed_path)
  from its layers with the convolutions of `conv_backend` ('onednn' or 'xla'; default:
  config.cpu.conv_backend resolved, which builds the oneDNN extension the first time it is
  chosen)."""
  layers = layer_set.FLAX
  if uses_cpu_speed_path(config):
    layers = layer_set.cpu(conv_backend or onednn.resolve(config.cpu.conv_backend))
  return models.create_model(config.model.name, cifar100.NUM_CLASSES, config.model.dtype,
                             layers=layers, **config.model.kwargs)


def _init_variables(model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array,
                    images: np.ndarray) -> dict:
  return model.init(rng, preprocessing.preprocess(images, config), train=False)


def abstract_variables(model: nn.Module, config: ml_collections.ConfigDict) -> dict:
  """The shapes and dtypes of the model's {'params', 'batch_stats'}, computed without running it."""
  images = jax.ShapeDtypeStruct((1, *cifar100.IMAGE_SHAPE), jnp.uint8)
  variables = jax.eval_shape(functools.partial(_init_variables, model, config),
                             jax.random.PRNGKey(0), images)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int,
                       sample_images: np.ndarray | None = None,
                       model: nn.Module | None = None) -> tuple[TrainState, schedules.Schedule]:
  """A freshly initialised state, and the learning-rate schedule its optimiser follows.

  `sample_images` (uint8 training images) are what the model is initialised on; models that fit
  some weights to the data (airbench's whitening) need them, others only use their shape.
  `model`: default `create_model(config)`.
  """
  tx, schedule = optimizers.create_optimizer(config, config.train.num_epochs * steps_per_epoch,
                                        steps_per_epoch)
  model = model or create_model(config)
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.train.seed))
  if sample_images is None:
    sample_images = np.zeros((1, *cifar100.IMAGE_SHAPE), np.uint8)
  variables = jax.jit(functools.partial(_init_variables, model, config))(init_rng, sample_images)
  batch_stats = variables.get('batch_stats', {})
  ema = (_copy({'params': variables['params'], 'batch_stats': batch_stats})
         if config.train.ema_decay else None)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=batch_stats, rng=run_rng, ema=ema)
  return state, schedule


def model_to_evaluate(state: TrainState) -> ModelState:
  """What validation, testing and export use: the EMA weights when the run keeps them."""
  variables = (state.ema if state.ema is not None
               else {'params': state.params, 'batch_stats': state.batch_stats})
  return ModelState(apply_fn=state.apply_fn, step=state.step, **variables)


def with_evaluated_batch_stats(state: TrainState, batch_stats: Any) -> TrainState:
  """`state` whose evaluated model (see model_to_evaluate) has these BatchNorm statistics."""
  if state.ema is not None:
    return state.replace(ema={**state.ema, 'batch_stats': batch_stats})
  return state.replace(batch_stats=batch_stats)

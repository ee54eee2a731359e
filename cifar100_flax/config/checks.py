"""Checks a config before anything is compiled, so that a bad value fails in a second, clearly.

`validate` hands each subtree to the package that reads it (models, cpu, data, augment, optim,
schedule) and checks here what the training loop reads (train, eval, checkpoint,
early_stopping, distill) and what holds between subtrees, such as the image sides the model can
take. It builds no model's layers beyond their shapes and reads no data; it asks JAX for the device
count (batch sizes must divide by it). Whether pretrained weights can be had is asked only of a
run about to start (loading.check_start): they are read at its step 0, never again.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import ml_collections

from cifar100_flax import models
from cifar100_flax.cpu import onednn
from cifar100_flax.data import augment, cifar100
from cifar100_flax.errors import ConfigError, one_line, require, require_non_negative
from cifar100_flax.optim import optimizers, schedules

# The early stopper's metrics, and whether it seeks their 'max' or 'min'.
EARLY_STOPPING_METRICS = {'val_accuracy': 'max', 'val_top5_accuracy': 'max', 'val_loss': 'min'}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first key whose value cannot work."""
  _require_finite(config.to_dict())
  devices = jax.device_count()
  models.check_config(config.model, cifar100.NUM_CLASSES)
  onednn.check_config(config.cpu)
  cifar100.check_config(config.data, devices)
  augment.check_config(config.augment)
  optimizers.check_config(config.optim)
  optimizers.check_params(config.optim, _abstract_params(config))
  schedules.check_config(config.schedule)
  _check_training(config, devices)
  _check_distillation(config)


def _abstract_params(config: ml_collections.ConfigDict) -> dict:
  """The shapes of the model's parameters, traced without computing anything; raises ConfigError
  for an image side (of training, its schedule or evaluation) the model cannot take."""
  model = models.create_model(config.model.name, cifar100.NUM_CLASSES, config.model.dtype,
                              **config.model.kwargs)
  traced = {}
  for key, side in _image_sides(config):
    if side not in traced:
      traced[side] = _traced(model, side)
    problem = traced[side][1]
    if problem:
      raise ConfigError(
          f'{side}-pixel images (config.{key}) are too small for model {config.model.name!r}: '
          f'{problem}. Use a side of at least {_smallest_side(model, side)}')
  return traced[_image_sides(config)[0][1]][0]


def _image_sides(config: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  """(key, side) of every side the model will see, training's first (0 is CIFAR's own); a side
  out of range is left to its own key's check."""
  data_side = config.data.image_size or cifar100.IMAGE_SHAPE[0]
  sides = [('data.image_size', data_side),
           *(('data.image_size_schedule', side) for _, side in config.data.image_size_schedule),
           ('eval.image_size', config.eval.image_size or data_side)]
  return [(key, side) for key, side in sides if 0 < side <= cifar100.MAX_IMAGE_SIZE]


def _traced(model: nn.Module, side: int) -> tuple[dict | None, str | None]:
  """The shapes of the model's parameters initialised on `side`-pixel images, traced without
  computing anything; or, if it cannot take such images, why: a feature map pooled or strided to
  nothing, which XLA computes without a word (the mean of nothing is NaN), or a layer that
  refuses one in a traceback."""
  images = jax.ShapeDtypeStruct((1, side, side, cifar100.IMAGE_SHAPE[2]), jnp.float32)
  try:
    computation, shapes = jax.make_jaxpr(functools.partial(model.init, train=False),
                                         return_shape=True)(jax.random.PRNGKey(0), images)
  except (ValueError, TypeError, ZeroDivisionError) as e:  # a layer of nothing, as JAX says it
    return None, f'a layer fails on such images ({type(e).__name__}: {one_line(e)})'

  def empty(jaxpr: jax.extend.core.Jaxpr) -> bool:
    return (any(0 in getattr(var.aval, 'shape', ()) for eqn in jaxpr.eqns for var in eqn.outvars)
            or any(map(empty, jax.extend.core.subjaxprs(jaxpr))))
  if empty(computation.jaxpr):
    return None, 'its feature maps shrink to nothing (pooled or strided away)'
  return shapes['params'], None


def _smallest_side(model: nn.Module, too_small: int) -> int:
  """The smallest side above `too_small` the model takes (feature maps shrink monotonically with
  the side, so a bisection finds it)."""
  low, high = too_small, cifar100.MAX_IMAGE_SIZE
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (middle, high) if _traced(model, middle)[1] else (low, middle)
  return high


def _require_finite(tree: dict, prefix: str = 'config.') -> None:
  for key, value in tree.items():
    if isinstance(value, dict):
      _require_finite(value, f'{prefix}{key}.')
    require(not isinstance(value, float) or math.isfinite(value),
            f'{prefix}{key} must be a finite number, got {value}')


def _check_training(config: ml_collections.ConfigDict, devices: int) -> None:
  """The training loop's subtrees, and what must hold between subtrees."""
  train, evaluation, stopping = config.train, config.eval, config.early_stopping
  require(train.num_epochs > 0, f'config.train.num_epochs must be > 0, got {train.num_epochs}')
  require(0 <= train.label_smoothing < 1,
          f'config.train.label_smoothing must be in [0, 1), got {train.label_smoothing}')
  require(0 <= train.ema_decay < 1, f'config.train.ema_decay must be in [0, 1), got '
          f'{train.ema_decay}')
  require(train.log_every_steps > 0,
          f'config.train.log_every_steps must be > 0, got {train.log_every_steps}')
  require(evaluation.batch_size > 0, f'config.eval.batch_size must be > 0, got '
          f'{evaluation.batch_size}')
  require(evaluation.batch_size % devices == 0, f'config.eval.batch_size='
          f'{evaluation.batch_size} must be divisible by the number of devices ({devices})')
  require(evaluation.batch_size <= cifar100.NUM_TEST_EXAMPLES,
          f'config.eval.batch_size must be at most {cifar100.NUM_TEST_EXAMPLES:,} (the test split; '
          f'a larger batch is padding), got {evaluation.batch_size}')
  require_non_negative(evaluation, 'config.eval',
                       ('every_steps', 'translate_tta', 'recalibration_images'))
  cifar100.check_image_size('eval.image_size', evaluation.image_size)
  require(config.checkpoint.keep > 0,
          f'config.checkpoint.keep must be > 0, got {config.checkpoint.keep}')
  require(stopping.metric in EARLY_STOPPING_METRICS, f'config.early_stopping.metric='
          f'{stopping.metric!r} is unknown; choose one of {sorted(EARLY_STOPPING_METRICS)}')
  require_non_negative(stopping, 'config.early_stopping', ('patience', 'min_delta'))
  require(config.data.validation_size or not stopping.patience,
          'config.data.validation_size=0 leaves nothing to stop early on: set '
          'config.early_stopping.patience=0')


def teachers(config: ml_collections.ConfigDict) -> list[str]:
  """The teachers' workdirs config.distill_from names (none: an empty list)."""
  return [teacher.strip() for teacher in config.distill_from.split(',') if config.distill_from]


def _check_distillation(config: ml_collections.ConfigDict) -> None:
  """config.distill_from's form and config.distill (training/distillation.py checks the teachers
  themselves when a run starts)."""
  require(all(teachers(config)),
          f'config.distill_from must name workdirs separated by commas, got '
          f'{config.distill_from!r}')
  require(config.distill.temperature > 0,
          f'config.distill.temperature must be > 0, got {config.distill.temperature}')
  require(0 <= config.distill.weight <= 1,
          f'config.distill.weight must be in [0, 1], got {config.distill.weight}')

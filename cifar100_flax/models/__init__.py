"""The models: this registry (a config's `model` name -> a Flax module taking (images, train)),
one module per family (cnn, airbench, resnet, efficientnet, vit), the layers they are built from
(`layer_set`: Flax's own, or the CPU path's) and ImageNet weights converted to their variables
(`pretrained`).

Imports: Flax, `cpu` (the CPU path's layers) and the base modules; nothing of data or training.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from cifar100_flax.errors import ConfigError, require
from cifar100_flax.models import airbench, efficientnet, pretrained, resnet, vit
from cifar100_flax.models.airbench import Airbench
from cifar100_flax.models.cnn import CNN
from cifar100_flax.models.layer_set import FLAX, LayerSet

# name -> (module, the arguments that name fixes)
MODELS = {'cnn': (CNN, {}), 'airbench': (Airbench, {})}
MODELS.update({f'resnet{depth}': (resnet.ResNet, dict(block=block, stage_sizes=stage_sizes))
               for depth, (block, stage_sizes) in resnet.DEPTHS.items()})
MODELS.update({f'efficientnet_lite{i}': (efficientnet.EfficientNetLite, dict(variant=i))
               for i in efficientnet.VARIANTS})
MODELS.update({f'vit_{variant}_patch16': (vit.VisionTransformer,
                                          dict(variant=variant, patch_size=16))
               for variant in vit.VARIANTS})
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Model arguments that are probabilities (or, for BatchNorm, a fraction kept).
_FRACTIONS = ('dropout', 'drop_path', 'batch_norm_momentum')


# Model arguments that take one of a few words.
CHOICES = {'stem': resnet.STEMS, 'activation': tuple(airbench.ACTIVATIONS),
           'head': airbench.HEADS}


def _argument_problem(name: str, value: Any, default: Any) -> str:
  """What is wrong with model argument `name`=`value`, judged by its default's type ('' if
  nothing): a model's module would otherwise fail deep in its first call, or train nonsense
  (dropout 1.5 drops everything)."""
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if name in CHOICES:
    return '' if value in CHOICES[name] else f'is not one of {list(CHOICES[name])}'
  if isinstance(default, bool):
    return '' if isinstance(value, bool) else 'must be True or False'
  if isinstance(default, int):
    return '' if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else (
        'must be an integer >= 0')
  if isinstance(default, float):
    if not number(value) or not math.isfinite(value):
      return 'must be a finite number'
    if value == default:  # e.g. -1: the variant's own
      return ''
    if name in _FRACTIONS:
      return '' if 0 <= value < 1 else 'must be in [0, 1)'
    return '' if value > 0 else 'must be > 0'
  if isinstance(default, str):
    return '' if isinstance(value, str) else 'must be a string'
  if isinstance(default, tuple):
    ok = isinstance(value, (tuple, list)) and value and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    return '' if ok else 'must be a tuple of positive integers, e.g. (32, 64)'
  return ''


def create_model(name: str, num_classes: int, dtype: str = 'float32',
                 layers: LayerSet = FLAX, **kwargs) -> nn.Module:
  """Model `name` with its config.model.kwargs, built from `layers` (Flax's by default)."""
  if name not in MODELS:
    raise ConfigError(f'config.model.name={name!r} is not a known model; choose one of '
                      f'{sorted(MODELS)}')
  if dtype not in DTYPES:
    raise ConfigError(f'config.model.dtype={dtype!r} is not supported; choose one of '
                      f'{sorted(DTYPES)}')
  module, fixed = MODELS[name]
  fields = {f.name: f.default for f in dataclasses.fields(module)
            if f.name not in {'parent', 'name', 'num_classes', 'dtype', 'layers', *fixed}}
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ConfigError(f'config.model.kwargs has {unknown}, which model {name!r} does not take; '
                      f'it takes {sorted(fields)}')
  for key, value in kwargs.items():
    problem = _argument_problem(key, value, fields[key])
    if problem:
      raise ConfigError(f'config.model.kwargs.{key}={value!r} {problem}')
  try:
    return module(num_classes=num_classes, dtype=DTYPES[dtype], layers=layers, **fixed, **kwargs)
  except ValueError as e:  # arguments that do not fit together
    raise ConfigError(f'config.model.kwargs: {e}') from None


def check_config(model: ml_collections.ConfigDict, num_classes: int) -> None:
  """Raises ConfigError for a `config.model` that cannot be built or given its weights: the
  model is built (its arguments checked, no layer run), and its pretrained weights named right."""
  create_model(model.name, num_classes, model.dtype, **model.kwargs)
  require(model.init_sample_size > 0,
          f'config.model.init_sample_size must be > 0, got {model.init_sample_size}')
  if model.pretrained:
    pretrained.check_config(model)

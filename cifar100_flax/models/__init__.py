"""Model registry: a config's `model` name -> a Flax module taking (images, train)."""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from cifar100_flax.cpu import layers
from cifar100_flax.errors import ConfigError
from cifar100_flax.models import efficientnet, resnet, vit
from cifar100_flax.models.airbench import Airbench
from cifar100_flax.models.cnn import CNN

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


def create_model(name: str, num_classes: int, dtype: str = 'float32',
                 conv: Callable[..., nn.Module] = layers.Conv, **kwargs) -> nn.Module:
  """Model `name` with its config.model_kwargs; `conv`: the convolution it is built with
  (`layers.conv_module(backend)`; XLA's by default)."""
  if name not in MODELS:
    raise ConfigError(f'config.model={name!r} is not a known model; choose one of {sorted(MODELS)}')
  if dtype not in DTYPES:
    raise ConfigError(f'config.dtype={dtype!r} is not supported; choose one of {sorted(DTYPES)}')
  module, fixed = MODELS[name]
  fields = ({f.name for f in dataclasses.fields(module)}
            - {'parent', 'name', 'num_classes', 'dtype', 'conv'} - set(fixed))
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f'config.model_kwargs has {unknown}, which model {name!r} does not take; '
                      f'it takes {sorted(fields)}')
  return module(num_classes=num_classes, dtype=DTYPES[dtype], conv=conv, **fixed, **kwargs)

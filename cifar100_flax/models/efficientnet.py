"""EfficientNet-Lite 0-4 (Tan & Le, 2019; the mobile variant: ReLU6, no squeeze-excitation).

Names follow the `efficientnet_pytorch` state-dict layout of the published Lite weights
(`_blocks.3._expand_conv` is `blocks_3/expand_conv`), so they convert one to one. Padding is
TensorFlow's 'SAME' (asymmetric for strided convs) as in the original, BatchNorm has TF's
momentum 0.99 and epsilon 1e-3, and the stem and head widths stay fixed across sizes (Lite rule).
Inputs are expected scaled to mean 0.5, std 0.5 per channel, like the weights were trained on.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.models.layer_set import FLAX, LayerSet

# (repeats, kernel, stride, expansion, output channels) of each stage, for width/depth 1.0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# name -> (width multiplier, depth multiplier, native resolution, dropout)
VARIANTS = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3),
            3: (1.2, 1.4, 280, 0.3), 4: (1.4, 1.8, 300, 0.3)}
_STEM, _HEAD = 32, 1280



def round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
  """The reference implementation's rounding: to a multiple of 8, never down by more than 10%."""
  channels *= multiplier
  rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * channels else rounded)


def _conv_and_norm(layers: LayerSet, dtype: Any,
                   frozen_statistics: bool) -> tuple[Callable, Callable]:
  """The convolution ('SAME', no bias) and BatchNorm (TensorFlow's momentum and epsilon) of
  every layer."""
  return (functools.partial(layers.conv, use_bias=False, padding='SAME', dtype=dtype),
          functools.partial(layers.batch_norm, use_running_average=frozen_statistics,
                            momentum=0.99, epsilon=1e-3, dtype=dtype))


class MBConv(nn.Module):
  """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; identity shortcut if shapes
  allow."""
  out_channels: int
  kernel: int
  stride: int
  expansion: int
  drop_path: float  # probability of dropping the residual branch of this block (stochastic depth)
  dtype: Any
  layers: LayerSet
  batch_norm_frozen: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv, norm = _conv_and_norm(self.layers, self.dtype, not train or self.batch_norm_frozen)
    y = x
    channels = x.shape[-1] * self.expansion
    if self.expansion != 1:
      y = norm(name='bn0', activation=nn.relu6)(
          conv(channels, (1, 1), name='expand_conv')(y))
    y = conv(channels, (self.kernel, self.kernel), self.stride, feature_group_count=channels,
             name='depthwise_conv')(y)
    y = norm(name='bn1', activation=nn.relu6)(y)
    y = norm(name='bn2')(conv(self.out_channels, (1, 1), name='project_conv')(y))
    if self.stride == 1 and x.shape[-1] == self.out_channels:
      # Stochastic depth: a dropped branch leaves the identity (rescaled like dropout).
      y = nn.Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)(y)
      y = y + x
    return y


class EfficientNetLite(nn.Module):
  num_classes: int
  variant: int = 0
  dropout: float = -1.0  # before the classifier; -1: the variant's own
  drop_path: float = 0.2  # stochastic depth of the last block (linear in depth from 0)
  batch_norm_frozen: bool = False  # True: use the (pretrained) running statistics in training too
  dtype: Any = jnp.float32
  layers: LayerSet = FLAX  # layer_set.FLAX or layer_set.cpu(...)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width, depth, _, dropout = VARIANTS[self.variant]
    conv, norm = _conv_and_norm(self.layers, self.dtype, not train or self.batch_norm_frozen)
    x = conv(_STEM, (3, 3), 2, name='conv_stem')(x.astype(self.dtype))
    x = norm(name='bn0', activation=nn.relu6)(x)
    blocks = []
    for index, (repeats, kernel, stride, expansion, channels) in enumerate(STAGES):
      # Lite keeps the first and last stages' depth fixed.
      repeats = repeats if index in (0, len(STAGES) - 1) else math.ceil(depth * repeats)
      blocks += [(round_channels(channels, width), kernel, stride if i == 0 else 1, expansion)
                 for i in range(repeats)]
    for index, (channels, kernel, stride, expansion) in enumerate(blocks):
      x = MBConv(channels, kernel, stride, expansion, self.drop_path * index / len(blocks),
                 self.dtype, self.layers, self.batch_norm_frozen, name=f'blocks_{index}')(x, train)
    x = norm(name='bn1', activation=nn.relu6)(
        conv(_HEAD, (1, 1), name='conv_head')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(dropout if self.dropout < 0 else self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='fc')(x).astype(jnp.float32)

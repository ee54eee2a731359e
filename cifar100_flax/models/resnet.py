"""ResNet 18/34/50/101/152 in torchvision's layout (v1.5: a bottleneck's stride is on its 3x3 conv).

Module and parameter names follow torchvision's state-dict keys (`layer2_0.downsample_conv` is
`layer2.0.downsample.0`), so that its ImageNet checkpoints convert one to one. `stem='cifar'` swaps
the 7x7/2 convolution and max-pooling for one 3x3/1 convolution, the usual choice for 32x32 images.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.models.layer_set import FLAX, LayerSet

# 'imagenet': torchvision's 7x7/2 convolution and max-pooling; 'cifar': one 3x3/1 convolution.
STEMS = ('imagenet', 'cifar')

ModuleDef = Callable[..., nn.Module]


def _conv_and_norm(layers: LayerSet, dtype: Any,
                   frozen_statistics: bool) -> tuple[ModuleDef, ModuleDef]:
  """The convolution and BatchNorm of every layer: no conv bias, BatchNorm from running
  statistics in evaluation (or always, when frozen), with PyTorch's momentum (0.1 there is 0.9
  here) and epsilon."""
  return (functools.partial(layers.conv, use_bias=False, dtype=dtype),
          functools.partial(layers.batch_norm, use_running_average=frozen_statistics,
                            momentum=0.9, epsilon=1e-5, dtype=dtype))


class _Block(nn.Module):
  width: int  # of the 3x3 convolutions; a bottleneck outputs 4x as many channels
  stride: int  # of the first 3x3 convolution and the shortcut
  dtype: Any
  layers: LayerSet
  batch_norm_frozen: bool = False


class BasicBlock(_Block):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv, norm = _conv_and_norm(self.layers, self.dtype, not train or self.batch_norm_frozen)
    y = conv(self.width, (3, 3), self.stride, padding=1, name='conv1')(x)
    y = norm(name='bn1', activation=nn.relu)(y)
    y = conv(self.width, (3, 3), padding=1, name='conv2')(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al., 2017).
    return norm(name='bn2', scale_init=nn.initializers.zeros, activation=nn.relu)(
        y, _shortcut(x, self.width, self.stride, conv, norm))


class Bottleneck(_Block):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv, norm = _conv_and_norm(self.layers, self.dtype, not train or self.batch_norm_frozen)
    y = conv(self.width, (1, 1), name='conv1')(x)
    y = norm(name='bn1', activation=nn.relu)(y)
    y = conv(self.width, (3, 3), self.stride, padding=1, name='conv2')(y)
    y = norm(name='bn2', activation=nn.relu)(y)
    y = conv(self.width * 4, (1, 1), name='conv3')(y)
    return norm(name='bn3', scale_init=nn.initializers.zeros, activation=nn.relu)(
        y, _shortcut(x, self.width * 4, self.stride, conv, norm))


def _shortcut(x: jax.Array, width: int, stride: int, conv: ModuleDef, norm: ModuleDef) -> jax.Array:
  if x.shape[-1] == width and stride == 1:
    return x
  x = conv(width, (1, 1), stride, name='downsample_conv')(x)
  return norm(name='downsample_bn')(x)


class ResNet(nn.Module):
  num_classes: int
  block: str = 'basic'  # basic | bottleneck
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = 'imagenet'  # imagenet | cifar
  width: int = 64
  dropout: float = 0.0
  batch_norm_frozen: bool = False  # True: use the (pretrained) running statistics in training too
  dtype: Any = jnp.float32
  layers: LayerSet = FLAX  # layer_set.FLAX or layer_set.cpu(...)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block = {'basic': BasicBlock, 'bottleneck': Bottleneck}[self.block]
    conv, norm = _conv_and_norm(self.layers, self.dtype, not train or self.batch_norm_frozen)
    if self.stem == 'imagenet':
      x = conv(self.width, (7, 7), 2, padding=3, name='conv1')(x)
      x = norm(name='bn1', activation=nn.relu)(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.width, (3, 3), padding=1, name='conv1')(x)
      x = norm(name='bn1', activation=nn.relu)(x)
    for stage, size in enumerate(self.stage_sizes):
      for index in range(size):
        stride = 2 if stage > 0 and index == 0 else 1
        x = block(self.width * 2**stage, stride, self.dtype, self.layers, self.batch_norm_frozen,
                  name=f'layer{stage + 1}_{index}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x).astype(jnp.float32)


# Each depth's block and blocks per stage, as in torchvision.
DEPTHS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
          50: ('bottleneck', (3, 4, 6, 3)), 101: ('bottleneck', (3, 4, 23, 3)),
          152: ('bottleneck', (3, 8, 36, 3))}

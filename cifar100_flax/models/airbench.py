"""A CIFAR speedrun network after Keller Jordan's airbench (2024): few, wide layers that learn fast.

A frozen 2x2 "whitening" convolution (filters: the eigenvectors of the training images' 2x2
patches, scaled to unit variance) feeds stages of (conv, 2x2 max-pool, BatchNorm, activation,
(conv, BatchNorm, activation) x n), or, with `residual_mids`, of (conv, pool, BatchNorm,
activation) and a residual pair x + act(BN(conv(act(BN(conv(x)))))) through fewer channels.
Convolutions start near the identity, BatchNorm has no scale (only a bias), and the classifier's
logits are scaled down. The whitening filters are fitted when the model is initialised: initialise
it on a batch of (preprocessed) training images.

Each convolution's kernel side, the activation and the head's pooling can be chosen, for the
CIFAR-100 speedrun's network (Navier-Stoked, 2025: residual pairs through 64, 192 and 512
channels, 1x1 convolutions in the first stage, a 2x2 one opening the last, SiLU, max and mean
pooled features).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.models.layer_set import FLAX, LayerSet

_WHITENING_EPSILON = 5e-4  # added to the patch covariance's eigenvalues, as airbench does
ACTIVATIONS = {'gelu': functools.partial(nn.gelu, approximate=True), 'silu': nn.silu}
HEADS = ('max', 'max_mean')  # the last feature map's max; its max and mean side by side


def whitening_kernel(images: jax.Array, size: int = 2) -> jax.Array:
  """[size, size, C, 2 * size * size * C] filters that whiten `images`' patches (then their
  negatives)."""
  patches = jax.lax.conv_general_dilated_patches(
      images.astype(jnp.float32), (size, size), (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  channels = images.shape[-1]
  # conv_general_dilated_patches orders a patch's features (channel, row, col).
  patches = patches.reshape(-1, channels, size, size).transpose(0, 2, 3, 1).reshape(
      -1, size * size * channels)
  patches = patches - patches.mean(axis=0)
  covariance = patches.T @ patches / patches.shape[0]
  eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
  filters = eigenvectors / jnp.sqrt(eigenvalues + _WHITENING_EPSILON)
  kernel = filters.reshape(size, size, channels, -1)
  return jnp.concatenate([kernel, -kernel], axis=-1)


def _identity_init(key, shape, dtype=jnp.float32):
  """lecun_normal filters whose first input-many outputs also pass their input channel through
  (from the tap that 'SAME' padding centres: the top left one of an even kernel)."""
  kernel = nn.initializers.lecun_normal()(key, shape, dtype)
  kh, kw, cin, cout = shape
  n = min(cin, cout)
  return kernel.at[(kh - 1) // 2, (kw - 1) // 2, jnp.arange(n), jnp.arange(n)].add(1.0)


class Airbench(nn.Module):
  num_classes: int
  widths: Sequence[int] = (64, 256, 256)
  convs_per_stage: int = 2
  logit_scale: float = 1 / 9
  batch_norm_momentum: float = 0.6  # PyTorch's 0.4: short runs need fast running statistics
  # Each convolution's kernel side, stage by stage (convs_per_stage a stage); (): all 3x3.
  kernel_sizes: Sequence[int] = ()
  # The channels inside each stage's residual pair (convs_per_stage must then be 3: the first
  # convolution and the pair); (): plain stages, as airbench.
  residual_mids: Sequence[int] = ()
  activation: str = 'gelu'  # one of ACTIVATIONS
  head: str = 'max'  # one of HEADS
  identity_init: bool = True  # else lecun_normal alone, for comparison
  dtype: Any = jnp.float32
  layers: LayerSet = FLAX  # layer_set.FLAX or layer_set.cpu(...)

  def __post_init__(self) -> None:
    convs = len(self.widths) * self.convs_per_stage
    if self.residual_mids and (len(self.residual_mids) != len(self.widths)
                               or self.convs_per_stage != 3):
      raise ValueError(f'residual_mids={tuple(self.residual_mids)} needs one width a stage '
                       f'({len(self.widths)} stages) and convs_per_stage=3 (the first '
                       f'convolution and the residual pair), got {self.convs_per_stage}')
    if self.kernel_sizes and len(self.kernel_sizes) != convs:
      raise ValueError(f'kernel_sizes={tuple(self.kernel_sizes)} names {len(self.kernel_sizes)} '
                       f'kernels; the network has {convs} convolutions (widths x convs_per_stage)')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    activation = ACTIVATIONS[self.activation]
    kernel = self.param('whitening', lambda _: whitening_kernel(x))
    # Frozen: the filters are fitted to the data, never trained (their bias is).
    x = jax.lax.conv_general_dilated(x.astype(self.dtype),
                                     jax.lax.stop_gradient(kernel).astype(self.dtype),
                                     (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = self.layers.bias_activation(
        x, self.param('whitening_bias', nn.initializers.zeros, (kernel.shape[-1],)), activation)
    kernel_init = _identity_init if self.identity_init else nn.initializers.lecun_normal()
    sides = iter(self.kernel_sizes or [3] * len(self.widths) * self.convs_per_stage)

    def conv_bn(x, width, pool=False):
      x = self.layers.conv(width, (next(sides),) * 2, padding='SAME', use_bias=False,
                           dtype=self.dtype, kernel_init=kernel_init)(x)
      if pool:
        x = self.layers.max_pool(x, 2)
      return self.layers.batch_norm(use_running_average=not train,
                                    momentum=self.batch_norm_momentum, epsilon=1e-12,
                                    use_scale=False, dtype=self.dtype, activation=activation)(x)

    for stage, width in enumerate(self.widths):
      x = conv_bn(x, width, pool=True)
      if self.residual_mids:
        # Added after the pair's activation, as the speedrun's network does (BatchNorm's own
        # `residual` argument adds before it, as ResNets do).
        x = x + conv_bn(conv_bn(x, self.residual_mids[stage]), width)
      else:
        for _ in range(self.convs_per_stage - 1):
          x = conv_bn(x, width)
    features = jnp.max(x, axis=(1, 2))
    if self.head == 'max_mean':
      features = jnp.concatenate([features, jnp.mean(x, axis=(1, 2))], axis=-1)
    logits = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype)(features)
    return logits.astype(jnp.float32) * self.logit_scale

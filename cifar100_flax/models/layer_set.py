"""The layers a model is built from: Flax's own, or the CPU speed path's, chosen once per run.

Every model takes a `LayerSet` (its convolution, BatchNorm, max-pooling and bias + activation).
`FLAX` is Flax's own layers with their standard numerics, for GPUs and TPUs, where XLA compiles
them well and where the CPU path's rewrites were never measured; `cpu(conv_backend)` is
`cifar100_flax.cpu.layers`, the same functions written for XLA:CPU (and oneDNN). Both create the
same parameters and statistics under the same names, so a checkpoint trained with one resumes,
evaluates and exports with the other.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.cpu import convolution, fused_layers


@dataclasses.dataclass(frozen=True)
class LayerSet:
  name: str  # as the console says it
  conv: Callable[..., nn.Module]  # nn.Conv's signature
  # nn.BatchNorm's fields and `activation`; called as (x, residual=None): activation(bn(x) + r).
  batch_norm: Callable[..., nn.Module]
  max_pool: Callable[[jax.Array, int], jax.Array]  # (NHWC images, window): non-overlapping
  bias_activation: Callable[[jax.Array, jax.Array, Callable], jax.Array]  # activation(x + bias)


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm`, then `activation(y + residual)`: the CPU path's interface with Flax's
  numerics (its class name gives the same automatic module names, BatchNorm_0, ...)."""
  activation: Callable | None = None  # elementwise, e.g. nn.relu; None: the identity

  def __call__(self, x: jax.Array, residual: jax.Array | None = None) -> jax.Array:
    y = super().__call__(x)
    if residual is not None:
      y = y + residual.astype(y.dtype)
    return self.activation(y) if self.activation else y


def _max_pool(x: jax.Array, window: int) -> jax.Array:
  return nn.max_pool(x, (window, window), strides=(window, window))


def _bias_activation(x: jax.Array, bias: jax.Array, activation: Callable) -> jax.Array:
  return activation(x.astype(jnp.float32) + bias).astype(x.dtype)


FLAX = LayerSet('Flax layers', nn.Conv, BatchNorm, _max_pool, _bias_activation)


@functools.cache
def cpu(conv_backend: str) -> LayerSet:
  """The CPU speed path with `conv_backend`'s convolutions ('onednn' or 'xla', as
  `cpu.onednn.resolve` chose)."""
  return LayerSet(f'CPU layers, {conv_backend} convolutions',
                  convolution.conv_module(conv_backend), fused_layers.BatchNorm,
                  fused_layers.max_pool, fused_layers.bias_activation)

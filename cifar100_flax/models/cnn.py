"""A VGG-style CNN: stages of (3x3 conv, BatchNorm, ReLU) x n then 2x2 max-pooling, a dense head."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.models.layer_set import FLAX, LayerSet


class CNN(nn.Module):
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 2
  hidden: int = 256
  dropout: float = 0.3
  dtype: Any = jnp.float32
  layers: LayerSet = FLAX  # layer_set.FLAX or layer_set.cpu(...)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for width in self.widths:
      for _ in range(self.convs_per_stage):
        x = self.layers.conv(width, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
        # PyTorch's default momentum (0.1 there is 0.9 here) suits runs of a few thousand steps.
        x = self.layers.batch_norm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                             activation=nn.relu)(x)
      x = self.layers.max_pool(x, 2)
    x = jnp.mean(x, axis=(1, 2))
    if self.hidden:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)

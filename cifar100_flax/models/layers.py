"""BatchNorm and max-pooling written so that their reverse mode is cheap on XLA:CPU.

Autodiff of `flax.linen.BatchNorm` in training mode makes several passes over the activations, and
the gradient of `nn.max_pool` is XLA's select-and-scatter; on the project's 2-core CPU the two cost
the custom CNN's training step more than a third of its time beyond the convolutions. Here the
BatchNorm gradient is the textbook closed form (two reductions and one elementwise pass) and
non-overlapping max-pooling is a reshape and a max, whose gradient is a mask. Values equal Flax's
(tested); parameter and statistics names are Flax's, so checkpoints and converted weights fit.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """`nn.max_pool(x, (window, window), strides=(window, window))` of NHWC images."""
  n, h, w, c = x.shape
  h, w = h - h % window, w - w % window  # Like 'VALID' pooling: an incomplete window is dropped.
  return x[:, :h, :w].reshape(n, h // window, window, w // window, window, c).max(axis=(2, 4))


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  # As Flax: E[x^2] - E[x]^2 (one pass over x), clipped at 0 against rounding.
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)


def _normalise(x32, mean, inv_std, scale, bias):
  return (x32 - mean) * (inv_std * scale) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Normalises x over all but its last axis with the batch's statistics: (y, mean, var).

  Statistics and arithmetic are float32; y has x's dtype. mean and var carry no gradient (they
  only feed the running averages).
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  mean, var = _moments(x32)
  inv_std = jax.lax.rsqrt(var + epsilon)
  y = _normalise(x32, mean, inv_std, scale, bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv_std, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv_std, scale = residuals
  dy = cotangents[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  x_hat = (x.astype(jnp.float32) - mean) * inv_std
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * x_hat, axes)
  dx = (scale * inv_std / count) * (count * dy - dbias - x_hat * dscale)
  return dx.astype(x.dtype), dscale, dbias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis, with the same variables and running-average rule."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    scale = self.param('scale', self.scale_init, features, jnp.float32)
    bias = self.param('bias', self.bias_init, features, jnp.float32)
    dtype = self.dtype or x.dtype
    if self.use_running_average:
      inv_std = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return _normalise(x.astype(jnp.float32), ra_mean.value, inv_std, scale, bias).astype(dtype)
    y, mean, var = batch_norm_train(x.astype(dtype), scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y

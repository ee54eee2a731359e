"""BatchNorm (with its activation and residual) and max-pooling with hand-written gradients,
which XLA:CPU runs fast.

Autodiff of `flax.linen.BatchNorm` in training mode makes several passes over the activations, and
the gradient of `nn.max_pool` is XLA's select-and-scatter; on a 2-core CPU the two cost the custom
CNN's training step more than a third of its time beyond the convolutions. Here the BatchNorm
gradient is the textbook closed form (two reductions and one elementwise pass) and non-overlapping
max-pooling is the maximum of strided views, whose gradient is one masked pass. Values equal
Flax's (tested; max-pooling's gradient at ties aside); parameter and statistics names are Flax's,
so checkpoints and converted weights fit."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _windows(x, window):
  """x cut to whole windows ('VALID' pooling drops an incomplete one), as (n, h, k, w, k, c)."""
  n, h, w, c = x.shape
  h, w = h - h % window, w - w % window
  return x[:, :h, :w].reshape(n, h // window, window, w // window, window, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """`nn.max_pool(x, (window, window), strides=(window, window))` of NHWC images.

  The gradient goes to each window's first maximum (PyTorch's rule; JAX's splits it among ties):
  one elementwise pass, where splitting costs a reduction over a mask XLA:CPU writes out first.
  """
  # The maximum of strided views is one fused pass over x; reducing `_windows(x, window)` first
  # copied the cropped x out (airbench's 31x31 maps), then reduced it on YNNPACK.
  h, w = x.shape[1] - x.shape[1] % window, x.shape[2] - x.shape[2] % window
  views = [x[:, i:h:window, j:w:window] for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, views)


def _max_pool_fwd(x, window):
  y = max_pool(x, window)
  return y, (x, y)


def _max_pool_bwd(window, residuals, cotangent):
  x, y = residuals
  windows = _windows(x, window)
  # In float32 (exact for the comparisons): XLA:CPU's bfloat16 elementwise passes run slower.
  windows, y, cotangent = (a.astype(jnp.float32) for a in (windows, y, cotangent))
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(window):
    row = []
    for j in range(window):
      first = (windows[:, :, i, :, j] == y) & ~taken
      taken = taken | first
      row.append(jnp.where(first, cotangent, 0.0))
    rows.append(jnp.stack(row, axis=3))  # (n, h, w, k, c)
  dx = jnp.stack(rows, axis=2).reshape(windows.shape[0], -1, windows.shape[3] * window, x.shape[3])
  dx = dx.astype(x.dtype)
  return (jnp.pad(dx, ((0, 0), (0, x.shape[1] - dx.shape[1]), (0, x.shape[2] - dx.shape[2]),
                       (0, 0))),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _sum_over_rows(x: jax.Array) -> jax.Array:
  """x summed over all but its last axis, in float32, as a product with a row of ones.

  XLA:CPU hands a sum to YNNPACK, which first writes every broadcast and elementwise input of the
  summed expression out in full (airbench's whitening bias gradient: seven tensors the size of its
  first activation). A dot's operand is one fused pass instead.
  """
  rows = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  return (jnp.ones((1, rows.shape[0]), jnp.float32) @ rows)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))


def bias_activation(x: jax.Array, bias: jax.Array, activation: Callable) -> jax.Array:
  """`activation(x + bias)` (bias over x's last axis), computed in float32, returned in x's
  dtype."""
  return activation(x.astype(jnp.float32) + bias).astype(x.dtype)


def _bias_activation_fwd(x, bias, activation):
  return bias_activation(x, bias, activation), (x, bias)


def _bias_activation_bwd(activation, residuals, cotangent):
  x, bias = residuals
  _, activation_vjp = jax.vjp(activation, x.astype(jnp.float32) + bias)
  dz = activation_vjp(cotangent.astype(jnp.float32))[0]
  return dz.astype(x.dtype), _sum_over_rows(dz).astype(bias.dtype)


bias_activation.defvjp(_bias_activation_fwd, _bias_activation_bwd)


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  # As Flax: E[x^2] - E[x]^2 (one pass over x), clipped at 0 against rounding.
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)


def _normalise(x32, mean, inv_std, scale, bias):
  return (x32 - mean) * (inv_std * scale) + bias


def _activate(z32, residual, activation):
  """activation(z + residual) in float32 (residual may be None, activation None: the identity)."""
  if residual is not None:
    z32 = z32 + residual.astype(jnp.float32)
  return activation(z32) if activation else z32


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     residual: jax.Array | None, epsilon: float,
                     activation: Callable | None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`activation(normalise(x) + residual)` with the batch's statistics over all but x's last axis:
  (y, mean, var).

  One op so that the pre-activation tensor is never stored: the backward pass recomputes it from x
  inside its own elementwise passes (docs/speed.md). Statistics and arithmetic are
  float32; y has x's dtype. mean and var carry no gradient (they only feed the running averages).
  """
  return _batch_norm_train_fwd(x, scale, bias, residual, epsilon, activation)[0]


def _batch_norm_train_fwd(x, scale, bias, residual, epsilon, activation):
  x32 = x.astype(jnp.float32)
  mean, var = _moments(x32)
  inv_std = jax.lax.rsqrt(var + epsilon)
  y = _activate(_normalise(x32, mean, inv_std, scale, bias), residual, activation).astype(x.dtype)
  return (y, mean, var), (x, residual, mean, inv_std, scale, bias)


def _batch_norm_train_bwd(epsilon, activation, residuals, cotangents):
  del epsilon
  x, residual, mean, inv_std, scale, bias = residuals
  x32 = x.astype(jnp.float32)
  _, activation_vjp = jax.vjp(lambda z: _activate(z, residual, activation),
                              _normalise(x32, mean, inv_std, scale, bias))
  dz = activation_vjp(cotangents[0].astype(jnp.float32))[0]
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  dbias = jnp.sum(dz, axes)
  # sum(dz * x_hat) from sum(dz * x): XLA then never writes x_hat out for the reduction.
  dscale = inv_std * (jnp.sum(dz * x32, axes) - mean * dbias)
  x_hat = (x32 - mean) * inv_std
  dx = (scale * inv_std / count) * (count * dz - dbias - x_hat * dscale)
  dresidual = None if residual is None else dz.astype(residual.dtype)
  return dx.astype(x.dtype), dscale, dbias, dresidual


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis (same variables and running-average rule), then
  `activation(y + residual)`: `BatchNorm(..., activation=nn.relu)(x)` is
  `nn.relu(nn.BatchNorm(...)(x))` in one op whose gradient makes fewer passes over the
  activations."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  use_scale: bool = True  # False: no learnt scale (1)
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros
  activation: Callable | None = None  # elementwise, e.g. nn.relu; None: the identity

  @nn.compact
  def __call__(self, x: jax.Array, residual: jax.Array | None = None) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    scale = (self.param('scale', self.scale_init, features, jnp.float32) if self.use_scale
             else jnp.ones(features, jnp.float32))
    bias = self.param('bias', self.bias_init, features, jnp.float32)
    dtype = self.dtype or x.dtype
    if self.use_running_average:
      inv_std = jax.lax.rsqrt(ra_var.value + self.epsilon)
      z = _normalise(x.astype(jnp.float32), ra_mean.value, inv_std, scale, bias)
      return _activate(z, residual, self.activation).astype(dtype)
    y, mean, var = batch_norm_train(x.astype(dtype), scale, bias, residual, self.epsilon,
                                    self.activation)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y

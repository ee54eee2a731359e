"""Convolution, BatchNorm and max-pooling written so that XLA:CPU runs them (and their reverse
mode) fast.

Autodiff of `flax.linen.BatchNorm` in training mode makes several passes over the activations, and
the gradient of `nn.max_pool` is XLA's select-and-scatter; on a 2-core CPU the two cost the custom
CNN's training step more than a third of its time beyond the convolutions. Here the BatchNorm
gradient is the textbook closed form (two reductions and one elementwise pass) and non-overlapping
max-pooling is the maximum of strided views, whose gradient is one masked pass. Values equal
Flax's (tested; max-pooling's gradient at ties aside); parameter and statistics names are Flax's,
so checkpoints and converted weights fit.

XLA:CPU rewrites a convolution whose output is at most 2x2 (a ResNet's last stages on 32x32
images) into forms with trimmed or reversed windows that run on a naive loop, two orders of
magnitude slower than one matmul over its patches: `conv_general_dilated` does that, and on
oneDNN does it for outputs up to 3x3, whose convolutions oneDNN runs far below its matmul's speed.
A ViT's patch embedding (non-overlapping windows) is one matmul over the reshaped patches on
either backend: exact, and oneDNN 3.2's kernel gradient of a 16x16, stride-16 convolution crashed
the process on its second call (AMD EPYC, 2026-12-03). Depthwise convolutions (EfficientNet's)
are a naive loop too, forward and backward; here they are a sum of the input's shifted views
times the taps (XLA fuses the sum into one pass; its reverse mode is pads and reductions).
The figures are in docs/speed.md.

A model is built with its convolution: `conv_module('onednn')` or `conv_module('xla')`, as
`onednn.resolve(config.conv_backend)` chose.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cifar100_flax.cpu import onednn

_SMALL_OUTPUT_PIXELS = 4  # Output sizes up to 2x2 take the matmul path (measured, see above).
# On oneDNN, up to 3x3: its bfloat16 matmul runs on AMX several times faster than its convolutions
# of 3x3 maps; at 7x7 the patches cost more than they save.
_SMALL_OUTPUT_PIXELS_ONEDNN = 9


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, *, use_onednn: bool = False, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated=...)`: on oneDNN with
  `use_onednn` (the caller has resolved it to be available), else small outputs as matmuls,
  depthwise convolutions as sums of shifted views."""
  plain = _is_plain_2d(lhs.shape, rhs.shape, kwargs)
  depthwise = _is_depthwise_2d(lhs.shape, rhs.shape, kwargs)
  if plain or depthwise:
    if isinstance(padding, str):
      padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    out_shape = [(size + lo + hi - k) // s + 1 for size, (lo, hi), k, s in
                 zip(lhs.shape[1:3], padding, rhs.shape[:2], window_strides)]
    patchify = plain and _is_patchify(rhs.shape, window_strides, padding)
    if (use_onednn and onednn.supports(lhs, rhs)
        and kwargs.get('preferred_element_type') in (None, lhs.dtype)):
      if patchify or (plain and np.prod(out_shape) <= _SMALL_OUTPUT_PIXELS_ONEDNN):
        return _conv_as_matmul(lhs, rhs, window_strides, padding, onednn.matmul)
      # oneDNN's bfloat16 depthwise kernels (forward and backward) ran at half its float32 ones'
      # speed: Lite0's bfloat16 step at 128 px trained at 58 img/s, 102 with float32 depthwise
      # (AMD EPYC, docs/speed.md). The layer is memory-bound; float32 costs it nothing else.
      compute_dtype = jnp.float32 if depthwise else lhs.dtype
      out = onednn.conv(lhs.astype(compute_dtype), rhs.astype(compute_dtype),
                        tuple(window_strides), tuple(tuple(p) for p in padding),
                        kwargs.get('feature_group_count', 1))
      return out.astype(lhs.dtype)
    if patchify or (plain and np.prod(out_shape) <= _SMALL_OUTPUT_PIXELS):
      return _conv_as_matmul(lhs, rhs, window_strides, padding,
                             functools.partial(jnp.matmul, precision=kwargs.get('precision')))
    if depthwise:
      return _depthwise_as_shifts(lhs, rhs, window_strides, padding)
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _is_nhwc_undilated(lhs_shape, rhs_shape, kwargs) -> bool:
  """NHWC images, HWIO kernel, no dilation."""
  nhwc = jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape, ('NHWC', 'HWIO', 'NHWC'))
  return (len(lhs_shape) == 4
          and jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape,
                                             kwargs.get('dimension_numbers')) == nhwc
          and all(not d or set(d) == {1}
                  for d in (kwargs.get('lhs_dilation'), kwargs.get('rhs_dilation'))))


def _is_plain_2d(lhs_shape, rhs_shape, kwargs) -> bool:
  return (_is_nhwc_undilated(lhs_shape, rhs_shape, kwargs)
          and kwargs.get('feature_group_count', 1) == 1)


def _is_depthwise_2d(lhs_shape, rhs_shape, kwargs) -> bool:
  """One filter per input channel: feature groups = input channels = output channels."""
  return (_is_nhwc_undilated(lhs_shape, rhs_shape, kwargs)
          and kwargs.get('feature_group_count', 1) == lhs_shape[-1] == rhs_shape[-1] > 1
          and rhs_shape[2] == 1)


def _is_patchify(kernel_shape, strides, padding) -> bool:
  """Non-overlapping windows (a ViT's patch embedding): stride = kernel size > 1, no padding."""
  return (tuple(strides) == tuple(kernel_shape[:2]) and max(strides) > 1
          and all(lo == hi == 0 for lo, hi in padding))


def _patches(x, kernel_shape):
  """The non-overlapping (kh, kw) windows of x as (n, h / kh, w / kw, kh * kw * c), taps in
  the kernel's HWI order; an incomplete last window is dropped, as 'VALID' does."""
  (kh, kw), (n, h, w, c) = kernel_shape, x.shape
  oh, ow = h // kh, w // kw
  windows = x[:, :oh * kh, :ow * kw].reshape(n, oh, kh, ow, kw, c)
  return windows.transpose(0, 1, 3, 2, 4, 5).reshape(n, oh, ow, kh * kw * c)


def _shifted_views(x, kernel_shape, strides, padding):
  """(i, j, x_padded[:, i::stride, j::stride] cut to the output's size) for every tap (i, j)."""
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  (kh, kw), (sh, sw) = kernel_shape, strides
  oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  for i in range(kh):
    for j in range(kw):
      yield i, j, x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def _conv_as_matmul(x, kernel, strides, padding, matmul):
  if _is_patchify(kernel.shape, strides, padding):
    patches = _patches(x, kernel.shape[:2])
  else:
    patches = jnp.concatenate([view for _, _, view in
                               _shifted_views(x, kernel.shape[:2], strides, padding)], axis=-1)
  out = matmul(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, kernel.shape[-1]))
  return out.reshape(*patches.shape[:-1], kernel.shape[-1])


def _depthwise_as_shifts(x, kernel, strides, padding):
  return sum(view * kernel[i, j, 0].astype(x.dtype)
             for i, j, view in _shifted_views(x, kernel.shape[:2], strides, padding))


# `nn.Conv` (same parameters and initialisers) with `conv_general_dilated` above, on XLA's
# convolutions or on oneDNN's.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
OnednnConv = functools.partial(
    nn.Conv, conv_general_dilated=functools.partial(conv_general_dilated, use_onednn=True))
CONV_MODULES = {'xla': Conv, 'onednn': OnednnConv}


def conv_module(backend: str) -> Callable[..., nn.Module]:
  """The `nn.Conv` a model is built with for a resolved backend ('xla' or 'onednn')."""
  return CONV_MODULES[backend]


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
                     residual: Optional[jax.Array], epsilon: float,
                     activation: Optional[Callable]) -> tuple[jax.Array, jax.Array, jax.Array]:
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
  activation: Optional[Callable] = None  # elementwise, e.g. nn.relu; None: the identity

  @nn.compact
  def __call__(self, x: jax.Array, residual: Optional[jax.Array] = None) -> jax.Array:
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

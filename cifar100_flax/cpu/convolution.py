"""Convolutions routed to the forms XLA:CPU (or oneDNN) runs fast.

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
`onednn.resolve(config.cpu.conv_backend)` chose."""

import functools
from collections.abc import Callable, Sequence
from typing import Any

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

"""Convolution and pooling whose reverse mode XLA:CPU runs fast.

XLA:CPU computes a convolution's gradients with convolutions of unusual shapes (the batch dimension
contracted, dilated inputs) that fall to slow kernels (jax#23783, jax#31662): on a 2-core CPU one
3x3 layer's forward + backward pass took 2.6x PyTorch's. Here the gradients are written as what
XLA:CPU does well: the input gradient is a plain forward convolution, the kernel gradient one matrix
product over image patches. The values are those of `jax.grad` of `lax.conv_general_dilated`
(tested); other backends keep XLA's own rules.
"""

import functools
from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')
Padding = Union[str, Sequence[tuple[int, int]]]


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Padding, lhs_dilation: Any = None, rhs_dilation: Any = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated`, with the fast gradients for the 2-D NHWC case on CPU.

  Pass it to `flax.linen.Conv(conv_general_dilated=...)`; parameters are unchanged.
  """
  plain = (jax.default_backend() == 'cpu' and lhs.ndim == 4 and feature_group_count == 1
           and not kwargs and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision,
                                    **kwargs)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(p < 0 for pair in pads for p in pair):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                    dimension_numbers=dimension_numbers, precision=precision)
  return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """A 2-D NHWC x HWIO convolution (cross-correlation, as in every framework)."""
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC)


def _conv2d_fwd(x, kernel, strides, pads):
  return conv2d(x, kernel, strides, pads), (x, kernel)


def _conv2d_bwd(strides, pads, residuals, dy):
  x, kernel = residuals
  return (input_grad(dy, kernel, x.shape[1:3], strides, pads),
          kernel_grad(x, dy, kernel.shape, strides, pads))


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _unused_tail(size: int, k: int, stride: int, pad: tuple[int, int]) -> int:
  """Rows of the padded input past the last window: the forward pass never read them."""
  return (size + pad[0] + pad[1] - k) % stride


def input_grad(dy: jax.Array, kernel: jax.Array, spatial: Sequence[int], strides: Sequence[int],
               pads: Sequence[tuple[int, int]]) -> jax.Array:
  """d(conv)/d(input) as one forward convolution of the stride-dilated `dy` with the flipped kernel."""
  if kernel.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
    dx = jnp.einsum('nhwo,io->nhwi', dy, kernel[0, 0])
    # A strided 1x1 convolution read every stride-th pixel; the others get zero gradient.
    return lax.pad(dx, jnp.zeros((), dx.dtype),
                   [(0, 0, 0)] + [(0, size - 1 - (n - 1) * s, s - 1)
                                  for size, n, s in zip(spatial, dx.shape[1:3], strides)] + [(0, 0, 0)])
  dy_pads = [(0, 0, 0)]
  for size, k, s, pad in zip(spatial, kernel.shape[:2], strides, pads):
    dy_pads.append((k - 1 - pad[0], k - 1 - pad[1] + _unused_tail(size, k, s, pad), s - 1))
  dy = lax.pad(dy, jnp.zeros((), dy.dtype), dy_pads + [(0, 0, 0)])
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  return lax.conv_general_dilated(dy, flipped, (1, 1), 'VALID', dimension_numbers=_NHWC)


def kernel_grad(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int], strides: Sequence[int],
                pads: Sequence[tuple[int, int]]) -> jax.Array:
  """d(conv)/d(kernel) as one matrix product of the input's patches with `dy`."""
  kh, kw = kernel_shape[:2]
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  n, oh, ow, _ = dy.shape
  sh, sw = strides
  patches = jnp.stack([
      lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, x.shape[3]),
                (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)], axis=3)
  grad = jnp.einsum('nhwkc,nhwo->kco', patches, dy, preferred_element_type=jnp.float32)
  return grad.reshape(kernel_shape).astype(dy.dtype)


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """`nn.max_pool(x, (window, window), strides=(window, window))` of NHWC images.

  As a reshape and a max, its gradient is a mask; `nn.max_pool`'s is XLA's select-and-scatter,
  which is slow on CPU.
  """
  n, h, w, c = x.shape
  h, w = h - h % window, w - w % window  # Like 'VALID' pooling: an incomplete window is dropped.
  return x[:, :h, :w].reshape(n, h // window, window, w // window, window, c).max(axis=(2, 4))

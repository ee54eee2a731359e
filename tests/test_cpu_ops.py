import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cifar100_flax.models import cpu_ops

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _vjp(conv, x, kernel, strides, padding):
  y, pullback = jax.vjp(lambda x, k: conv(x, k, strides, padding,
                                          dimension_numbers=lax.conv_dimension_numbers(
                                              x.shape, k.shape, NHWC)), x, kernel)
  cotangent = jax.random.normal(jax.random.key(2), y.shape).astype(y.dtype)
  return (y, *pullback(cotangent))


@pytest.mark.parametrize('size,k,stride,padding', [
    (8, 3, 1, ((1, 1), (1, 1))),   # the CNN's and ResNet's 3x3 convolutions
    (8, 3, 2, ((1, 1), (1, 1))),   # ResNet v1.5's strided 3x3
    (7, 3, 2, ((1, 1), (1, 1))),   # odd side: the last padded row is never read
    (9, 7, 2, ((3, 3), (3, 3))),   # ResNet's stem
    (8, 1, 1, ((0, 0), (0, 0))),
    (7, 1, 2, ((0, 0), (0, 0))),   # ResNet's downsampling shortcut
    (8, 3, 1, 'SAME'),
    (8, 5, 3, 'VALID'),
    (6, 2, 1, ((0, 1), (1, 0))),
])
def test_conv_gradients_equal_xlas(size, k, stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  kernel = jax.random.normal(jax.random.key(1), (k, k, 3, 5))
  expected = _vjp(lax.conv_general_dilated, x, kernel, (stride, stride), padding)
  with jax.default_device(jax.devices('cpu')[0]):
    actual = jax.jit(_vjp, static_argnums=(0, 3, 4))(cpu_ops.conv_general_dilated, x, kernel,
                                                     (stride, stride), padding)
  for name, a, e in zip(('output', 'input grad', 'kernel grad'), actual, expected):
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, atol=1e-4, rtol=1e-4, err_msg=name)


def test_conv_in_bfloat16_stays_bfloat16_and_close():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 6), jnp.bfloat16)
  actual = _vjp(cpu_ops.conv_general_dilated, x, kernel, (1, 1), ((1, 1), (1, 1)))
  expected = _vjp(lax.conv_general_dilated, x.astype(jnp.float32), kernel.astype(jnp.float32),
                  (1, 1), ((1, 1), (1, 1)))
  for a, e in zip(actual, expected):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(a.astype(jnp.float32), e, atol=0.25, rtol=0.05)


def test_grouped_and_dilated_convs_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 4))
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
  np.testing.assert_array_equal(
      cpu_ops.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=numbers,
                                   feature_group_count=4),
      lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=numbers,
                               feature_group_count=4))


def test_flax_conv_with_cpu_ops_has_the_same_params_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  plain = nn.Conv(4, (3, 3), strides=2, padding=1)
  fast = nn.Conv(4, (3, 3), strides=2, padding=1,
                 conv_general_dilated=cpu_ops.conv_general_dilated)
  params = plain.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(fast.init(jax.random.key(1), x))
  np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 7, 9, 2)])
def test_max_pool_and_its_gradient_equal_flaxs(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  expected, expected_grad = jax.value_and_grad(
      lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2))(x)
  actual, actual_grad = jax.value_and_grad(lambda x: jnp.sum(cpu_ops.max_pool(x, 2) ** 2))(x)
  np.testing.assert_allclose(actual, expected, rtol=1e-6)
  np.testing.assert_allclose(actual_grad, expected_grad, rtol=1e-6)

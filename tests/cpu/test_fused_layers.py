import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax.cpu import convolution, fused_layers


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 7, 9, 2)])
def test_max_pool_and_its_gradient_equal_flaxs(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  expected, expected_grad = jax.value_and_grad(
      lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2))(x)
  actual, actual_grad = jax.value_and_grad(lambda x: jnp.sum(fused_layers.max_pool(x, 2) ** 2))(x)
  np.testing.assert_allclose(actual, expected, rtol=1e-6)
  np.testing.assert_allclose(actual_grad, expected_grad, rtol=1e-6)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_max_pool_gives_a_tied_windows_gradient_to_its_first_maximum(dtype):
  x = jnp.array([[1.0, 3.0], [3.0, 0.0]], dtype).reshape(1, 2, 2, 1)  # maxima at (0, 1) and (1, 0)
  grad = jax.grad(lambda x: jnp.sum(fused_layers.max_pool(x, 2).astype(jnp.float32) * 5.0))(x)
  assert grad.dtype == dtype
  np.testing.assert_array_equal(grad.reshape(2, 2).astype(jnp.float32), [[0.0, 5.0], [0.0, 0.0]])


def _variables(features):
  scale = jnp.linspace(0.5, 1.5, features)
  return {'params': {'scale': scale, 'bias': jnp.linspace(-1.0, 1.0, features)},
          'batch_stats': {'mean': jnp.full(features, 0.3), 'var': jnp.full(features, 2.0)}}


def _apply(module, variables, x, train):
  """Output, gradients with respect to x and the parameters, and the new batch statistics."""
  cotangent = jax.random.normal(jax.random.key(2), x.shape)

  def loss(params, x):
    y, updates = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(nn.relu(y).astype(jnp.float32) * cotangent), (y, updates['batch_stats'])

  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      variables['params'], x)
  return y, grads, stats


@pytest.mark.parametrize('train', [True, False])
def test_batch_norm_equals_flaxs_values_gradients_and_statistics(train):
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6)) + 1.0
  variables = _variables(6)
  kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)
  actual = _apply(fused_layers.BatchNorm(**kwargs), variables, x, train)
  expected = _apply(nn.BatchNorm(**kwargs), variables, x, train)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
  if train:  # the running statistics moved toward the batch's
    assert not np.allclose(actual[2]['mean'], variables['batch_stats']['mean'])


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('activation',
                         [nn.relu, nn.relu6, functools.partial(nn.gelu, approximate=True)])
@pytest.mark.parametrize('with_residual', [False, True])
def test_batch_norm_with_activation_equals_flaxs_then_the_activation(train, activation,
                                                                     with_residual):
  """activation(BatchNorm(x) + residual) in one op: values, all gradients and statistics."""
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6)) + 1.0
  residual = jax.random.normal(jax.random.key(1), x.shape) if with_residual else None
  cotangent = jax.random.normal(jax.random.key(2), x.shape)
  variables = _variables(6)
  kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)

  def loss(forward, params, x, residual):
    y, updates = forward({**variables, 'params': params}, x, residual)
    return jnp.sum(y * cotangent), (y, updates['batch_stats'])

  def fused(variables, x, residual):
    return fused_layers.BatchNorm(**kwargs, activation=activation).apply(
        variables, x, residual, mutable=['batch_stats'])

  def flax_then_activation(variables, x, residual):
    y, updates = nn.BatchNorm(**kwargs).apply(variables, x, mutable=['batch_stats'])
    return activation(y if residual is None else y + residual), updates

  results = [jax.value_and_grad(functools.partial(loss, forward), argnums=(0, 1, 2), has_aux=True)(
                 variables['params'], x, residual) for forward in (fused, flax_then_activation)]
  for a, e in zip(*map(jax.tree.leaves, results)):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
  assert (results[0][1][2] is None) == (residual is None)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_bias_activation_equals_autodiff_of_the_plain_expression(dtype):
  x = jax.random.normal(jax.random.key(0), (3, 5, 5, 4)).astype(dtype)
  bias = jax.random.normal(jax.random.key(1), (4,))
  cotangent = jax.random.normal(jax.random.key(2), x.shape).astype(dtype)
  gelu = functools.partial(nn.gelu, approximate=True)
  plain = lambda x, bias: gelu(x.astype(jnp.float32) + bias).astype(x.dtype)
  fused = lambda x, bias: fused_layers.bias_activation(x, bias, gelu)
  results = []
  for f in (fused, plain):
    y, vjp = jax.vjp(f, x, bias)
    results.append((y, *vjp(cotangent)))
  for got, expected in zip(*results):
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got.astype(jnp.float32), expected.astype(jnp.float32),
                               rtol=1e-5, atol=1e-5)


def test_batch_norm_in_bfloat16_keeps_float32_variables():
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 6)).astype(jnp.bfloat16)
  module = fused_layers.BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(1), x)
  y, grads, stats = _apply(module, variables, x, True)
  assert y.dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves((variables, grads[0], stats)))
  expected = _apply(nn.BatchNorm(use_running_average=False, dtype=jnp.bfloat16), variables, x, True)
  np.testing.assert_allclose(y.astype(jnp.float32), expected[0].astype(jnp.float32), atol=0.05)


def test_initialising_does_not_move_the_running_statistics():
  variables = fused_layers.BatchNorm(use_running_average=False).init(
      jax.random.key(0), jnp.full((2, 3, 3, 4), 5.0))
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)
  np.testing.assert_array_equal(variables['batch_stats']['var'], 1.0)


def _assert_conv_equals_flaxs(x, **kwargs):
  """layers.Conv's output and gradients (input and kernel) equal nn.Conv's."""
  variables = nn.Conv(**kwargs).init(jax.random.key(1), x)

  def loss_and_grads(module):
    loss = lambda variables, x: jnp.sum(jnp.sin(module.apply(variables, x)))
    return loss(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x)

  expected = loss_and_grads(nn.Conv(**kwargs))
  actual = loss_and_grads(convolution.Conv(**kwargs))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5),
               actual, expected)


@pytest.mark.parametrize('size, kernel, stride, padding', [
    (2, 3, 1, 1), (2, 3, 2, 1), (1, 3, 1, 1), (4, 3, 2, 1), (3, 3, 2, 'SAME'), (8, 3, 1, 1),
    (8, 4, 4, 'VALID'), (9, 4, 4, 'VALID'), (12, 4, 4, 'VALID')])  # the last three: patches
def test_conv_and_its_gradients_equal_flaxs(size, kernel, stride, padding):
  x = jax.random.normal(jax.random.key(0), (3, size, size, 5))
  kwargs = dict(features=7, kernel_size=(kernel, kernel), strides=stride, padding=padding)
  _assert_conv_equals_flaxs(x, **kwargs)


@pytest.mark.parametrize('size, kernel, stride, padding', [
    (6, 3, 1, 'SAME'), (7, 3, 2, 'SAME'), (8, 5, 2, 'SAME'), (5, 5, 1, 'SAME'), (6, 3, 1, 'VALID'),
    (6, 3, 2, ((0, 1), (2, 0)))])
def test_depthwise_conv_and_its_gradients_equal_flaxs(size, kernel, stride, padding):
  x = jax.random.normal(jax.random.key(0), (3, size, size, 6))
  kwargs = dict(features=6, kernel_size=(kernel, kernel), strides=stride, padding=padding,
                feature_group_count=6)
  _assert_conv_equals_flaxs(x, **kwargs)

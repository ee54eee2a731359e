"""oneDNN convolutions: values and gradients against XLA's, routing, the fallback when
unavailable."""

import concurrent.futures
import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax.cpu import convolution, onednn
from cifar100_flax.data import preprocessing
from cifar100_flax.errors import ConfigError
from cifar100_flax.optim import optimizers
from cifar100_flax.training import states, steps
from tests.helpers import tiny_config, without_a_compiler

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason='oneDNN extension unavailable (apt-get install g++; '
                                  'pip install -r requirements.txt)')
needs_bfloat16 = pytest.mark.skipif(
    not (onednn.available() and onednn.supports(jnp.zeros((1, 1, 1, 1), jnp.bfloat16),
                                                jnp.zeros((1, 1, 1, 1), jnp.bfloat16))),
    reason='oneDNN has no bfloat16 kernels for this CPU (no AVX-512)')

# (image NHWC, kernel HWIO, strides, padding, groups): ResNet's stem and downsampling, odd sizes,
# 1x1 at stride 2, an output smaller than the kernel, EfficientNet's depthwise convolutions, groups.
GEOMETRIES = [((2, 9, 9, 3), (3, 3, 3, 8), (1, 1), ((1, 1), (1, 1)), 1),
              ((2, 16, 12, 8), (7, 7, 8, 4), (2, 2), ((3, 3), (3, 3)), 1),
              ((3, 8, 8, 16), (3, 3, 16, 16), (2, 2), ((0, 1), (0, 1)), 1),
              ((2, 7, 7, 4), (1, 1, 4, 8), (2, 2), ((0, 0), (0, 0)), 1),
              ((2, 2, 2, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1)), 1),
              ((2, 5, 6, 4), (2, 2, 4, 6), (1, 1), ((0, 0), (0, 0)), 1),
              ((2, 9, 9, 8), (3, 3, 1, 8), (2, 2), ((0, 1), (0, 1)), 8),
              ((2, 8, 8, 8), (5, 5, 1, 8), (1, 1), ((2, 2), (2, 2)), 8),
              ((2, 6, 6, 8), (3, 3, 4, 6), (1, 1), ((1, 1), (1, 1)), 2)]


def _xla_conv(x, kernel, strides, padding, groups):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=groups,
                                      precision=jax.lax.Precision.HIGHEST)


def _values_and_gradients(conv, x, kernel, strides, padding, groups):
  def loss(x, kernel):  # a non-linear loss: its output gradient differs everywhere
    return jnp.sum(jnp.sin(conv(x, kernel, strides, padding, groups).astype(jnp.float32)))
  return conv(x, kernel, strides, padding, groups), jax.grad(loss, argnums=(0, 1))(x, kernel)


@needs_onednn
@pytest.mark.parametrize('x_shape,kernel_shape,strides,padding,groups', GEOMETRIES)
def test_float32_values_and_gradients_equal_xlas(x_shape, kernel_shape, strides, padding, groups):
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  expected = _values_and_gradients(_xla_conv, x, kernel, strides, padding, groups)
  got = jax.jit(functools.partial(_values_and_gradients, onednn.conv),
                static_argnums=(2, 3, 4))(x, kernel, strides, padding, groups)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert g.shape == e.shape and g.dtype == e.dtype
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))


@needs_bfloat16
def test_bfloat16_accumulates_in_float32():
  x_shape, kernel_shape, strides, padding, groups = GEOMETRIES[2]
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], x_shape).astype(jnp.bfloat16)
  kernel = jax.random.normal(keys[1], kernel_shape).astype(jnp.bfloat16)
  y, vjp = jax.vjp(lambda x, kernel: onednn.conv(x, kernel, strides, padding, groups), x, kernel)
  y_gradient = jax.random.normal(keys[2], y.shape).astype(jnp.bfloat16)
  got = (y, *vjp(y_gradient))
  # The reference: the same bfloat16 numbers, computed in float32.
  f32 = lambda a: a.astype(jnp.float32)
  y32, vjp32 = jax.vjp(lambda x, kernel: _xla_conv(x, kernel, strides, padding, groups),
                       f32(x), f32(kernel))
  expected = (y32, *vjp32(f32(y_gradient)))
  for g, e in zip(got, expected):
    assert g.dtype == jnp.bfloat16
    # bfloat16 keeps 8 bits of mantissa: the rounding of each result, not of each product.
    np.testing.assert_allclose(f32(g), e, rtol=1e-2, atol=1e-2 * float(jnp.abs(e).max()))


@needs_onednn
@pytest.mark.parametrize('features,groups', [(8, 1), (4, 4)])  # plain and depthwise
def test_the_conv_module_of_each_backend_runs_its_convolutions(features, groups):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))

  def conv(backend):
    return convolution.conv_module(onednn.resolve(backend))(features, (3, 3), padding=1,
                                                       feature_group_count=groups, use_bias=False)

  variables = conv('xla').init(jax.random.key(1), x)
  hlo = {backend: jax.jit(conv(backend).apply).lower(variables, x).as_text()
         for backend in onednn.BACKENDS}
  assert 'onednn_conv_Forward' in hlo['onednn'] and 'onednn_conv_Forward' in hlo['auto']
  assert 'onednn_conv' not in hlo['xla']
  np.testing.assert_allclose(jax.jit(conv('onednn').apply)(variables, x),
                             conv('xla').apply(variables, x), rtol=1e-5, atol=1e-5)


@needs_bfloat16
def test_a_bfloat16_depthwise_convolution_runs_in_float32_on_onednn():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 4), jnp.bfloat16)
  conv = functools.partial(convolution.conv_general_dilated, window_strides=(1, 1),
                           padding=((1, 1), (1, 1)), feature_group_count=4, use_onednn=True,
                           dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  hlo = jax.jit(conv).lower(x, kernel).as_text()
  onednn_calls = [line for line in hlo.splitlines() if 'onednn_conv_Forward' in line]
  assert onednn_calls and all('bf16' not in line for line in onednn_calls)
  out = jax.jit(conv)(x, kernel)
  assert out.dtype == jnp.bfloat16
  expected = _xla_conv(x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1),
                       ((1, 1), (1, 1)), 4).astype(jnp.bfloat16)
  # One rounding to bfloat16 of a float32 result: at most one unit in the last place apart.
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(expected, np.float32),
                             rtol=2 ** -7)


def test_bfloat16_goes_to_xla_where_onednn_has_no_bfloat16_kernels(monkeypatch):
  """Without AVX-512, oneDNN cannot create a bfloat16 primitive: XLA convolves instead."""
  monkeypatch.setattr(onednn, 'takes_bfloat16', lambda: False)
  x = jnp.zeros((2, 8, 8, 4), jnp.bfloat16)
  for kernel_shape, groups in (((3, 3, 4, 8), 1), ((3, 3, 1, 4), 4)):
    hlo = jax.jit(functools.partial(
        convolution.conv_general_dilated, window_strides=(1, 1), padding=((1, 1), (1, 1)),
        feature_group_count=groups, use_onednn=True,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).lower(x, jnp.zeros(kernel_shape,
                                                                       jnp.bfloat16)).as_text()
    assert 'onednn' not in hlo
  assert onednn.supports(jnp.zeros((1, 1, 1, 1)), jnp.zeros((1, 1, 1, 1)))


@needs_onednn
def test_a_patch_embedding_on_onednn_is_a_matmul_that_equals_xlas_convolution():
  """A ViT's 16x16, stride-16 patches; oneDNN's own kernel gradient of it crashed on its second
  call, so it runs as a matmul, called here several times."""
  x = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
  conv = convolution.conv_module('onednn')(8, (16, 16), strides=16, padding='VALID')
  variables = conv.init(jax.random.key(1), x)
  loss = lambda variables, x, module: jnp.sum(jnp.sin(module.apply(variables, x)))
  grads = jax.jit(jax.grad(functools.partial(loss, module=conv), argnums=(0, 1)))
  hlo = grads.lower(variables, x).as_text()
  assert 'onednn_conv' not in hlo and 'onednn_matmul' in hlo
  for _ in range(3):
    got = jax.block_until_ready(grads(variables, x))
  expected = jax.grad(functools.partial(loss, module=convolution.conv_module('xla')(
      8, (16, 16), strides=16, padding='VALID')), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4), got, expected)


@needs_onednn
def test_a_model_built_with_onednn_traces_oneDNN_and_one_built_with_xla_does_not():
  """The convolution is the model's own: no setting read at trace time can swap it."""
  config = tiny_config()
  images = np.zeros((2, 32, 32, 3), np.uint8)
  hlo = {}
  for backend in ('xla', 'onednn'):
    model = states.create_model(config, backend)
    variables = model.init(jax.random.key(0), preprocessing.preprocess(images, config), train=False)
    hlo[backend] = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False)).lower(
        variables, preprocessing.preprocess(images, config)).as_text()
  assert 'onednn_conv' in hlo['onednn'] and 'onednn_conv' not in hlo['xla']


@needs_onednn
def test_a_training_step_on_onednn_matches_xla():
  config = tiny_config(model='airbench')
  config.model.kwargs = dict(widths=(8, 16, 16), convs_per_stage=2)
  batch = {'image': np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), np.uint8),
           'label': np.arange(16, dtype=np.int32), 'flip': np.zeros(16, bool)}
  results = []
  for backend in ('xla', 'onednn'):
    config.cpu.conv_backend = backend
    state, _ = states.create_train_state(config, steps_per_epoch=10, sample_images=batch['image'])
    state, step_metrics = steps.jit_train_step(config)(state, batch)
    results.append((state.params, state.batch_stats, step_metrics.compute()['loss']))
  for got, expected in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0])):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unknown_backend_is_a_config_error():
  with pytest.raises(ConfigError, match='conv_backend'):
    onednn.resolve('mkl')


def test_without_a_compiler_auto_falls_back_to_xla_and_onednn_is_an_error(monkeypatch, tmp_path):
  without_a_compiler(monkeypatch, tmp_path)
  assert not onednn.available()
  assert onednn.resolve('auto') == 'xla'
  with pytest.raises(ConfigError, match='building onednn_conv.cc failed'):
    onednn.resolve('onednn')


@needs_onednn
@pytest.mark.parametrize('shapes', [((37, 20), (20, 9)), ((1, 64), (64, 3))])
def test_matmul_values_and_gradients_equal_xlas(shapes):
  a, b = (jax.random.normal(jax.random.key(i), shape) for i, shape in enumerate(shapes))

  def values_and_gradients(matmul, a, b):
    return matmul(a, b), jax.grad(lambda a, b: jnp.sum(jnp.sin(matmul(a, b))), (0, 1))(a, b)

  xla_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  expected = values_and_gradients(xla_matmul, a, b)
  got = jax.jit(functools.partial(values_and_gradients, onednn.matmul))(a, b)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert g.shape == e.shape and g.dtype == e.dtype
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@needs_bfloat16
def test_bfloat16_matmul_accumulates_in_float32():
  a = jax.random.normal(jax.random.key(0), (8, 4096)).astype(jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (4096, 4)).astype(jnp.bfloat16)
  got = onednn.matmul(a, b)
  assert got.dtype == jnp.bfloat16
  expected = a.astype(jnp.float32) @ b.astype(jnp.float32)
  # Summed in bfloat16, 4096 products of ~1 would be off by far more than one final rounding.
  np.testing.assert_allclose(got.astype(jnp.float32), expected, rtol=1e-2, atol=0.5)


@needs_onednn
def test_small_maps_convolve_as_a_matmul_on_onednn():
  """A 3x3 output (a CIFAR net's last stage) goes to oneDNN's matmul over patches, same
  gradients."""
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 5))
  onednn_conv, xla_conv = (module(6, (3, 3), padding=1, use_bias=False)
                           for module in (convolution.OnednnConv, convolution.Conv))
  variables = xla_conv.init(jax.random.key(1), x)

  def values_and_gradients(conv, variables, x):
    loss = lambda variables, x: jnp.sum(jnp.sin(conv.apply(variables, x)))
    return conv.apply(variables, x), jax.grad(loss, (0, 1))(variables, x)

  lowered = jax.jit(functools.partial(values_and_gradients, onednn_conv)).lower(variables, x)
  got = lowered.compile()(variables, x)
  assert 'onednn_matmul' in lowered.as_text() and 'onednn_conv' not in lowered.as_text()
  expected = values_and_gradients(xla_conv, variables, x)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize('dtype', [jnp.float32,
                                   pytest.param(jnp.bfloat16, marks=needs_bfloat16)])
def test_concurrent_calls_do_not_corrupt_each_other(dtype):
  """XLA runs independent custom calls at once (here six chains of three convolutions); oneDNN's
  primitives share one scratchpad, so unserialised calls overwrote each other's intermediates."""
  keys = jax.random.split(jax.random.key(0), 12)
  xs = [jax.random.normal(k, (64, 8, 8, 64)).astype(dtype) for k in keys[:6]]
  kernels = [(jax.random.normal(k, (3, 3, 64, 64)) / 20).astype(dtype) for k in keys[6:]]
  conv = functools.partial(onednn.conv, strides=(1, 1), padding=((1, 1), (1, 1)))
  chain = lambda x, kernel: conv(jnp.tanh(conv(jnp.tanh(conv(x, kernel)), kernel)), kernel)
  together = jax.jit(lambda xs, kernels: [chain(x, k) for x, k in zip(xs, kernels)])
  alone = [jax.jit(chain)(x, kernel) for x, kernel in zip(xs, kernels)]
  for _ in range(3):
    for got, expected in zip(together(xs, kernels), alone):
      np.testing.assert_array_equal(got, expected)


def kernel_gradients_on_other_threads():
  """Kernel gradients of 5x5 depthwise convolutions of 4x4 maps (EfficientNet's last stages at
  128 px; on AVX2 CPUs oneDNN computes them by im2col into a scratchpad), on four threads, against
  XLA's. Run in a child process by the test below."""
  x, output_gradient = (jax.random.normal(jax.random.key(i), (32, 4, 4, 512)) for i in (0, 1))

  def kernel_gradient(conv):
    loss = lambda kernel: jnp.vdot(conv(x, kernel, (1, 1), ((2, 2), (2, 2)), 512), output_gradient)
    return jax.jit(jax.grad(loss))(jnp.zeros((5, 5, 1, 512)))
  expected = kernel_gradient(_xla_conv)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    for got in pool.map(lambda _: kernel_gradient(onednn.conv), range(16)):
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


@needs_onednn
def test_a_primitive_runs_on_threads_other_than_the_one_that_made_it():
  """XLA makes a primitive on one of its threads and runs it on any: with oneDNN's own
  thread-local scratchpad, sized where the primitive was made, an AVX2 CPU crashed (SIGSEGV in
  a separate process here, so that the suite survives it)."""
  child = ('from tests.cpu.test_onednn import kernel_gradients_on_other_threads; '
           'kernel_gradients_on_other_threads()')
  done = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]


@needs_bfloat16
def test_muon_runs_newton_schulz_on_onednn_only_in_bfloat16_on_the_cpu_path():
  config = tiny_config(optimizer='muon', conv_backend='onednn')
  assert states.newton_schulz_product(config) is optimizers.xla_product  # float32: XLA's dot
  config.optim.muon.newton_schulz_dtype = 'bfloat16'
  assert states.newton_schulz_product(config) is onednn.product
  config.cpu.conv_backend = 'xla'
  assert states.newton_schulz_product(config) is optimizers.xla_product


@needs_bfloat16
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_product_reads_a_matrix_transposed_in_place(dtype):
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (24, 40)).astype(dtype) for i in (0, 1))
  c = jax.random.normal(jax.random.PRNGKey(2), (40, 16)).astype(dtype)
  tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=5e-2)
  f32 = lambda x: x.astype(jnp.float32)
  for got, want in [(jax.jit(lambda a, b: onednn.product(a, b, transpose_b=True))(a, b),
                     f32(a) @ f32(b).T),
                    (jax.jit(lambda a, b: onednn.product(a, b, transpose_a=True))(a, b),
                     f32(a).T @ f32(b)),
                    (jax.jit(onednn.product)(a, c), f32(a) @ f32(c))]:
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(jnp.float32), want, **tolerance)

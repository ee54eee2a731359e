import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cifar100_flax.cpu import fused_layers
from cifar100_flax.data import preprocessing
from cifar100_flax.training import recalibration, states
from tests.helpers import tiny_config

EPSILON = 1e-5


class _TwoNorms(nn.Module):
  """BatchNorm, Dense, BatchNorm and Dropout: the second's statistics depend on the first's
  training-mode output, and dropout (which recalibration turns off) would change them."""
  frozen: bool = False

  @nn.compact
  def __call__(self, x, train):
    x = fused_layers.BatchNorm(use_running_average=not train or self.frozen, momentum=0.9)(x)
    x = nn.Dense(4, kernel_init=nn.initializers.normal(1.0))(x)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return fused_layers.BatchNorm(use_running_average=not train, momentum=0.5)(x)


def _model(frozen=False):
  module = _TwoNorms(frozen)
  images = np.zeros((2, 32, 32, 3), np.uint8)
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(images, jnp.float32), train=False)
  return module, states.ModelState(apply_fn=module.apply, params=variables['params'],
                                  batch_stats=variables['batch_stats'], step=jnp.int32(0))


def _reference(module, model, images, config, batch_size):
  """Each batch's statistics computed in numpy, averaged."""
  kernel = np.asarray(model.params['Dense_0']['kernel'])
  bias = np.asarray(model.params['Dense_0']['bias'])
  first, second = [], []
  for i in range(0, len(images) - batch_size + 1, batch_size):
    x = np.asarray(preprocessing.preprocess(images[i:i + batch_size], config), np.float64)
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    first.append((mean, var))
    y = (x - mean) / np.sqrt(var + EPSILON) @ kernel + bias  # BatchNorm's scale 1, bias 0
    second.append((y.mean((0, 1, 2)), y.var((0, 1, 2))))
  average = lambda stats: {'mean': np.mean([s[0] for s in stats], 0),
                           'var': np.mean([s[1] for s in stats], 0)}
  return {'BatchNorm_0': average(first), 'BatchNorm_1': average(second)}


def test_statistics_are_the_mean_of_each_batchs_without_dropout():
  config = tiny_config(batch_size=16)
  images = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3)).astype(np.uint8)
  module, model = _model()
  recalibrated = recalibration.recalibrate(model, images, config)
  expected = _reference(module, model, images, config, 16)  # 4 whole batches; 6 left out
  for layer, stats in expected.items():
    for name, value in stats.items():
      np.testing.assert_allclose(recalibrated.batch_stats[layer][name], value, rtol=2e-4,
                                 atol=1e-5, err_msg=f'{layer}/{name}')
  np.testing.assert_array_equal(recalibrated.params['Dense_0']['kernel'],
                                model.params['Dense_0']['kernel'])


def test_recalibration_uses_the_evaluation_size():
  config = tiny_config(batch_size=8, image_size=48, eval_image_size=64, normalisation='unit')
  images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
  module, model = _model()
  recalibrated = recalibration.recalibrate(model, images, config)
  upsampled = np.asarray(preprocessing.preprocess(images, config))
  assert upsampled.shape == (8, 64, 64, 3)
  np.testing.assert_allclose(recalibrated.batch_stats['BatchNorm_0']['mean'],
                             upsampled.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
  assert recalibration.record(config) == {'image_size': 64, 'images': 0}


def test_frozen_batch_norm_keeps_its_statistics():
  config = tiny_config(batch_size=8)
  images = np.random.default_rng(2).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
  _, model = _model(frozen=True)
  model = model.replace(batch_stats={**model.batch_stats, 'BatchNorm_0': {
      'mean': jnp.full(3, 0.25), 'var': jnp.full(3, 2.0)}})
  recalibrated = recalibration.recalibrate(model, images, config)
  np.testing.assert_array_equal(recalibrated.batch_stats['BatchNorm_0']['mean'], 0.25)
  np.testing.assert_array_equal(recalibrated.batch_stats['BatchNorm_0']['var'], 2.0)
  assert not np.allclose(recalibrated.batch_stats['BatchNorm_1']['var'], 1.0)

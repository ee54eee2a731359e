import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax import models
from cifar100_flax.errors import ConfigError


def _init(model):
  x = jnp.ones((2, 32, 32, 3))
  return x, model.init(jax.random.PRNGKey(0), x, train=False)


def test_cnn_logits_shape_and_batchnorm_updates():
  model = models.create_model('cnn', 100, widths=(8, 16), convs_per_stage=1, hidden=32, dropout=0.5)
  x, variables = _init(model)
  assert model.apply(variables, x, train=False).shape == (2, 100)
  logits, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                                mutable=['batch_stats'])
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables['batch_stats'],
                                   updates['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))


def test_dropout_only_in_training():
  model = models.create_model('cnn', 100, widths=(8,), convs_per_stage=1, hidden=32, dropout=0.5)
  x, variables = _init(model)
  train = lambda seed: model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(seed)},
                                   mutable=['batch_stats'])[0]
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                model.apply(variables, x, train=False))


def test_bfloat16_compute_keeps_float32_params():
  model = models.create_model('cnn', 100, 'bfloat16', widths=(8,), convs_per_stage=1)
  x, variables = _init(model)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
  assert model.apply(variables, x, train=False).dtype == jnp.float32


@pytest.mark.parametrize('name, kwargs, message', [
    ('resnet9000', {}, "config.model='resnet9000' is not a known model"),
    ('cnn', {'depth': 3}, r"config.model_kwargs has \['depth'\]"),
])
def test_bad_model_configs(name, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    models.create_model(name, 100, **kwargs)

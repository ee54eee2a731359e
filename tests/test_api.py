import numpy as np
import pytest

import cifar100_flax
from cifar100_flax import api
from cifar100_flax.config import loading
from cifar100_flax.data import cifar100
from cifar100_flax.errors import ConfigError


def test_the_package_s_attributes_are_the_api_loaded_on_first_use():
  assert cifar100_flax.train is api.train and cifar100_flax.load is api.load
  assert set(cifar100_flax.__all__) == set(cifar100_flax.API)
  with pytest.raises(AttributeError, match='no attribute'):
    cifar100_flax.nope  # noqa: B018


def test_get_config_reads_a_config_by_name_with_overrides_by_dotted_key():
  config = api.get_config('smoke', {'train.num_epochs': 3, 'model.kwargs.widths': (8, 16)})
  assert config.train.num_epochs == 3 and tuple(config.model.kwargs.widths) == (8, 16)
  assert config.model.kwargs.convs_per_stage == 1  # the rest is smoke.py's
  with pytest.raises(ConfigError, match='optim.learnig_rate is not a config key'):
    api.get_config('smoke', {'optim.learnig_rate': 0.1})
  with pytest.raises(ConfigError, match='must be'):
    api.get_config('smoke', {'train.num_epochs': -1})
  with pytest.raises(ConfigError, match='no such config file'):
    api.get_config('nope')


def test_load_gives_the_evaluated_probabilities_of_test_images(trained, mock_cifar):
  workdir, _ = trained
  config = loading.load_config(str(workdir))
  test = cifar100.source(config).load_splits(config, with_train=False)['test']
  model = api.load(str(workdir))
  saved = np.load(workdir / 'predictions_test.npz')['probs']
  np.testing.assert_allclose(model(test.images[:5]), saved[:5], atol=1e-5)
  assert any('val_accuracy' in record for record in api.history(str(workdir)))

"""Shared fixtures: mock CIFAR-100 (tfds.testing.mock_data) and a tiny, fast config."""

import contextlib
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import ml_collections
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cifar100_flax import evaluate, input_pipeline, train
from configs import default

tf.config.set_visible_devices([], 'GPU')
MOCK_EXAMPLES = 200  # per split; the validation carve-out comes out of the training split


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model_kwargs.widths = (8,)
  config.model_kwargs.convs_per_stage = 1
  config.model_kwargs.hidden = 0
  config.model_kwargs.dropout = 0.0
  config.data_dir = '/nonexistent'  # mock data ignores it; real data must not leak in
  config.validation_size = 40
  config.batch_size = 16
  config.eval_batch_size = 48  # does not divide 200: the last batch is padded
  config.num_epochs = 2
  config.log_every_steps = 5
  config.warmup_epochs = 0.5
  config.learning_rate = 0.05
  config.update(overrides)
  return config


@contextlib.contextmanager
def mocked_cifar(monkeypatch: pytest.MonkeyPatch):
  """Deterministic random CIFAR-100-shaped data; 'downloading' it is a no-op."""
  monkeypatch.setattr(input_pipeline, '_why_offline', lambda: None)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    yield


@pytest.fixture
def mock_cifar(monkeypatch):
  with mocked_cifar(monkeypatch):
    yield


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """A tiny model trained on mock data, and its evaluation."""
  workdir = tmp_path_factory.mktemp('run')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    train.train_and_evaluate(tiny_config(), str(workdir))
    report = evaluate.evaluate(tiny_config(), str(workdir))
  return workdir, report

"""Fixtures: mock CIFAR-100 and a tiny model trained on it (helpers.py has what they share)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from cifar100_flax import evaluate, train  # noqa: E402
from tests.helpers import mocked_cifar, tiny_config  # noqa: E402

tf.config.set_visible_devices([], 'GPU')


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

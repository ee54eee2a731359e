"""Fixtures: mock CIFAR-100 and a tiny model trained on it (helpers.py has what they share).
Nothing heavy is imported here: each test imports what it uses."""

import os

import pytest

from tests.helpers import mocked_cifar, tiny_config

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


@pytest.fixture
def mock_cifar(monkeypatch):
  with mocked_cifar(monkeypatch):
    yield


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """A tiny model trained on mock data, and its evaluation."""
  from cifar100_flax.evaluation import evaluate
  from cifar100_flax.training import loop
  workdir = tmp_path_factory.mktemp('run')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    loop.train_and_evaluate(tiny_config(), str(workdir))
    report = evaluate.evaluate(tiny_config(), str(workdir))
  return workdir, report

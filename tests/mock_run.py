"""Trains and evaluates the tiny test config on mock data in a fresh process.

The device count is fixed when JAX starts, so comparing device counts needs one process each:
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.mock_run WORKDIR
"""

import sys

import pytest

from cifar100_flax.evaluation import evaluate
from cifar100_flax.training import loop
from tests.helpers import mocked_cifar, tiny_config

if __name__ == '__main__':
  config = tiny_config(model_kwargs=dict(widths=(8,), convs_per_stage=1, hidden=16, dropout=0.2))
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    loop.train_and_evaluate(config, sys.argv[1])
    evaluate.evaluate(config, sys.argv[1])

"""A run's config.json is read back, and a resume with a config that trains something else is
refused, in either checkpoint layout."""

import tarfile

import pytest

from cifar100_flax.config import loading
from cifar100_flax.errors import ConfigError
from tests.helpers import REPO, tiny_config


def test_resuming_with_another_config_is_refused_and_a_free_key_is_not(trained):
  workdir, _ = trained
  loading.check_resumable(tiny_config(eval_batch_size=24, log_every_steps=2), str(workdir))
  with pytest.raises(ConfigError, match='learning_rate 0.05 -> 0.1'):
    loading.check_resumable(tiny_config(learning_rate=0.1), str(workdir))


def test_a_run_of_the_two_folder_layout_is_held_to_its_config(tmp_path):
  with tarfile.open(REPO / 'tests' / 'fixtures' / 'two_folder_run.tar.gz') as archive:
    archive.extractall(tmp_path, filter='data')
  workdir = str(tmp_path / 'two_folder_run')
  loading.check_resumable(loading.load_config(workdir), workdir)
  with pytest.raises(ConfigError, match='seed 0 -> 1'):
    loading.check_resumable(tiny_config(seed=1), workdir)

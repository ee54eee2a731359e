"""A run's config.json is read back, and a resume with a config that trains something else is
refused, in either checkpoint layout."""

import json
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


def test_a_flat_config_json_of_before_the_nesting_is_read_into_its_places(trained, tmp_path):
  """A run's config.json as runs wrote it before the nesting (model was the name, and so on)."""
  workdir, _ = trained
  config = loading.load_config(str(workdir))
  nested = json.loads(config.to_json_best_effort())

  def value(dotted):
    node = nested
    for part in dotted.split('.'):
      node = node[part]
    return node
  flat = {old: value(new) for old, new in loading.FLAT_KEYS.items()}
  flat['augment'] = nested['augment']
  del flat['eval_translate_tta']  # as if added since: it takes its default
  (tmp_path / 'config.json').write_text(json.dumps(flat))
  assert loading.load_config(str(tmp_path)) == config

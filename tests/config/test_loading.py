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


@pytest.mark.parametrize('change, message', [
    (lambda c: {**c, 'train': {**c['train'], 'num_epochs': '2'}},
     "config.train.num_epochs is a string \\('2'\\), not an integer"),
    (lambda c: {**c, 'train': {**c['train'], 'seed': None}}, 'config.train.seed is null'),
    (lambda c: {**c, 'augment': {**c['augment'], 'flip': 1}},
     'config.augment.flip is an integer \\(1\\), not true or false'),
    (lambda c: {**c, 'optim': []}, 'config.optim is a list, not an object'),
    (lambda c: {**c, 'train': {**c['train'], 'epochs': 2}},
     'config.train.epochs is not a config key'),
    (lambda c: None, 'config is null, not an object'),
], ids=['string', 'null', 'number-as-bool', 'subtree', 'unknown', 'top'])
def test_a_config_json_of_another_shape_is_named(trained, tmp_path, change, message):
  """issue 39, 15: valid JSON, checked against the defaults' keys and types."""
  workdir, _ = trained
  saved = json.loads((workdir / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps(change(saved)))
  with pytest.raises(ConfigError, match=f'config.json: {message}.*damaged'):
    loading.load_config(str(tmp_path))


def test_a_config_json_is_checked_as_a_config_is(trained, tmp_path):
  workdir, _ = trained
  saved = json.loads((workdir / 'config.json').read_text())
  saved['train']['num_epochs'] = -1
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(ConfigError, match='config.json: config.train.num_epochs must be > 0'):
    loading.load_config(str(tmp_path))


def test_the_data_dir_given_now_wins_over_the_recorded_one(trained, monkeypatch):
  """issue 39, 13: $TFDS_DATA_DIR over config.json's, a key given for the command over both."""
  workdir, _ = trained
  recorded = loading.load_config(str(workdir)).data.dir
  monkeypatch.setenv('TFDS_DATA_DIR', '/data/here')
  assert recorded != '/data/here'
  assert loading.load_config(str(workdir)).data.dir == '/data/here'
  given = loading.load_config(str(workdir), {'data.dir': '/given', 'eval.batch_size': 24})
  assert (given.data.dir, given.eval.batch_size) == ('/given', 24)


def test_only_keys_a_run_may_change_are_given(trained):
  workdir, _ = trained
  with pytest.raises(ConfigError, match='--config.optim.learning_rate would change what'):
    loading.load_config(str(workdir), {'optim.learning_rate': 1.0})


def test_a_resumed_run_keeps_recording_the_weights_it_started_from(trained, tmp_path):
  """issue 39, 12: resumed with the weights named elsewhere, or not at all."""
  workdir, _ = trained
  assert json.loads(loading.to_record(tiny_config(pretrained='a.msgpack'), str(tmp_path))
                    )['model']['pretrained'] == 'a.msgpack'  # a start records what it reads
  recorded = json.loads((workdir / 'config.json').read_text())['model']['pretrained']
  again = json.loads(loading.to_record(tiny_config(pretrained='elsewhere.msgpack'), str(workdir)))
  assert again['model']['pretrained'] == recorded

"""What is wrong with --config and its overrides, said in one line (no subprocess)."""

import pytest
from absl import flags

from cifar100_flax.cli import config_errors
from tests.helpers import tiny_config


def test_an_unknown_key_names_the_one_meant():
  problem = config_errors.unknown_key(tiny_config(), 'optim.learning_rat')
  assert "config.optim has no key 'learning_rat'" in problem
  assert 'did you mean config.optim.learning_rate?' in problem
  assert config_errors.unknown_key(tiny_config(), 'optim.learning_rate') is None


def test_a_flat_key_of_before_the_nesting_is_read_at_its_place_with_a_note(capsys):
  argv = ['main.py', '--config=configs/cnn.py', '--config.num_epochs=1', '--config.model=cnn',
          '--config.model_kwargs.widths=(8,)', '--config.model.kwargs.hidden=0',
          '--config.schedule.name=cosine', '--config.learning_rate', '0.1', '--mode=eval']
  assert config_errors.nested_overrides(argv) == [
      'main.py', '--config=configs/cnn.py', '--config.train.num_epochs=1',
      '--config.model.name=cnn', '--config.model.kwargs.widths=(8,)',
      '--config.model.kwargs.hidden=0', '--config.schedule.name=cosine',
      '--config.optim.learning_rate', '0.1', '--mode=eval']
  notes = capsys.readouterr().err.splitlines()
  assert notes[0] == ('note: --config.num_epochs is --config.train.num_epochs now (the config is '
                      'nested by its readers); read as that')
  assert len(notes) == 4  # the nested ones pass unsaid


def test_the_config_path_is_found_in_either_spelling():
  assert config_errors.config_path(['main.py', '--config=configs/cnn.py']) == 'configs/cnn.py'
  assert config_errors.config_path(['main.py', '--config', 'configs/cnn.py']) == 'configs/cnn.py'
  assert config_errors.config_path(['main.py', '--mode=eval']) is None


def test_a_missing_or_broken_config_file_is_named(tmp_path):
  assert 'no such file' in config_errors.flag_problem(['--config=configs/none.py'])
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config():\n  return 1 / 0\n')
  problem = config_errors.flag_problem([f'--config={broken}'])
  assert problem.startswith(f'--config={broken} does not load: ZeroDivisionError')


def test_a_wrong_key_in_a_good_file_is_named():
  problem = config_errors.flag_problem(['--config=configs/smoke.py', '--config.data.batch_sise=8'])
  assert 'did you mean config.data.batch_size?' in problem


def test_overrides_without_config_are_parsed_for_a_run_s_config_json():
  """issue 39, 13: --config.KEY VALUE or =VALUE, a bool alone, each as --config's would be."""
  argv = ['main.py', '--mode=predict', '--config.data.dir=/data', '--config.eval.batch_size',
          '24', '--config.augment.flip', 'picture.png', '--workdir=runs/x']
  assert config_errors.run_overrides(argv) == {'data.dir': '/data', 'eval.batch_size': 24,
                                               'augment.flip': True}
  rest, _ = config_errors._split_run_overrides(argv)
  assert rest == ['main.py', '--mode=predict', 'picture.png', '--workdir=runs/x']
  with_config = ['main.py', '--config=configs/cnn.py', '--config.data.dir=/data']
  assert config_errors.run_overrides(with_config) == {}
  assert config_errors._split_run_overrides(with_config)[0] == with_config


def test_an_override_without_config_is_checked_as_one_with_it():
  with pytest.raises(flags.Error, match="--config.eval.batch_size=abc: invalid literal"):
    config_errors.run_overrides(['main.py', '--config.eval.batch_size=abc'])
  problem = config_errors.flag_problem(['main.py', '--config.eval.batch_sise=8'])
  assert 'did you mean config.eval.batch_size?' in problem

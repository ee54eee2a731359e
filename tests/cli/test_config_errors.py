"""What is wrong with --config and its overrides, said in one line (no subprocess)."""

from cifar100_flax.cli import config_errors
from tests.helpers import tiny_config


def test_an_unknown_key_names_the_one_meant():
  problem = config_errors.unknown_key(tiny_config(), 'optim.learning_rat')
  assert "config.optim has no key 'learning_rat'" in problem
  assert 'did you mean config.optim.learning_rate?' in problem
  assert config_errors.unknown_key(tiny_config(), 'optim.learning_rate') is None


def test_a_flat_key_of_before_the_nesting_says_its_place():
  assert config_errors.unknown_key(tiny_config(), 'learning_rate').startswith(
      '--config.learning_rate is --config.optim.learning_rate now')
  assert '--config.model.kwargs.widths now' in config_errors.unknown_key(
      tiny_config(), 'model_kwargs.widths')
  # A subtree given a value, as the flat `model` was: its place is model.name.
  assert '--config.model.name now' in config_errors.unknown_key(tiny_config(), 'model')


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

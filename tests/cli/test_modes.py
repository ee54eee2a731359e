"""Each mode's needs, checked before any work, and the call it makes (no subprocess)."""

import pytest

from cifar100_flax.cli import modes, startup
from cifar100_flax.errors import UsageError
from tests.helpers import tiny_config


@pytest.mark.parametrize('command, message', [
    (modes.Command('train', ['w']), 'needs --config and one --workdir'),
    (modes.Command('eval', []), '--mode=eval needs --workdir'),
    (modes.Command('eval', ['a', 'b'], split='validation'), 'test split only'),
    (modes.Command('eval', ['a', 'b']), 'needs --output=DIR'),
    (modes.Command('predict', ['w']), 'needs --images'),
    (modes.Command('predict', ['a', 'b'], images=['x.png']), 'needs --output=FILE'),
    (modes.Command('export', ['a', 'b']), 'exports one --workdir'),
    (modes.Command('convert', [], weights='w.pth', model='resnet18'), '--output=FILE.msgpack'),
])
def test_a_command_that_lacks_what_it_needs_is_refused(command, message):
  with pytest.raises(UsageError, match=message):
    modes.check_usage(command)


def test_photos_and_convert_need_no_workdir():
  modes.check_usage(modes.Command('photos', []))
  modes.check_usage(modes.Command('convert', [], weights='w.pth', model='resnet18',
                                  output='w.msgpack'))


def test_train_checks_the_config_then_trains(monkeypatch, tmp_path):
  called = []
  monkeypatch.setattr(modes.loop, 'train_and_evaluate',
                      lambda config, workdir: called.append((config.optim.name, workdir)))
  modes.run(modes.Command('train', [str(tmp_path)], config=tiny_config()))
  assert called == [('sgd', str(tmp_path))]
  with pytest.raises(Exception, match='config.optim.learning_rate must be > 0'):
    modes.run(modes.Command('train', [str(tmp_path)], config=tiny_config(learning_rate=-1.0)))
  assert len(called) == 1


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(UsageError):
    modes.check_outputs(modes.Command('export', [str(tmp_path)], output=str(blocker / 'out')))


def test_cpu_tuning_auto_leaves_the_modes_that_gain_nothing(monkeypatch):
  monkeypatch.setattr(startup.tuning, 'configure', lambda: pytest.fail('tuned'))
  assert startup.tune_for_cpu('report', 'auto') is False
  assert startup.tune_for_cpu('train', 'off') is False


def test_print_config_shows_the_given_config_else_the_run_s(tmp_path):
  given = tiny_config(learning_rate=0.01)
  assert modes.resolved_config(modes.Command('train', ['w'], config=given)) is given
  (tmp_path / 'config.json').write_text(given.to_json())
  saved = modes.resolved_config(modes.Command('eval', [str(tmp_path)]))
  assert saved.optim.learning_rate == 0.01
  with pytest.raises(UsageError, match='needs --config, or one --workdir'):
    modes.resolved_config(modes.Command('eval', ['a', 'b']))


def test_help_says_how_to_override_keys_and_where_they_are_listed():
  from absl import flags as absl_flags

  from cifar100_flax.cli import entry
  assert '--config.optim.learning_rate=' in entry.USAGE
  assert 'cifar100_flax/config/defaults.py' in entry.USAGE and '--print_config' in entry.USAGE
  assert '--config.KEY=VALUE' in absl_flags.FLAGS['config'].help  # --helpfull's line

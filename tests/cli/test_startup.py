"""The process's start-up: what processes of one run compare, and a signal that Python cannot
raise where it lands."""

import os
import subprocess
import sys

from cifar100_flax.cli import modes, startup
from tests.helpers import REPO, tiny_config

# A signal whose exit is lost while an output's temporary is being written: in a garbage
# collection's callback (argv[1] 'gc'), or twice caught by code that swallows it.
_SIGNALLED = """
import gc, pathlib, signal, sys
from cifar100_flax import files
from cifar100_flax.cli import startup

def in_collection(phase, info):
  gc.callbacks.remove(in_collection)
  signal.raise_signal(signal.SIGINT)

startup.exit_on_signals()
with files.replaced(pathlib.Path(sys.argv[2])) as temporary:
  temporary.write_text('half')
  if sys.argv[1] == 'gc':
    gc.callbacks.append(in_collection)
    gc.collect()
  else:
    for _ in range(2):
      try:
        signal.raise_signal(signal.SIGINT)
      except SystemExit:
        pass
print('went on')
"""


def _signalled(tmp_path, lose: str) -> subprocess.CompletedProcess:
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  return subprocess.run([sys.executable, '-c', _SIGNALLED, lose, str(tmp_path / 'out.txt')],
                        env=env, capture_output=True, text=True, timeout=120)


def test_a_signal_in_a_garbage_collection_stops_at_once_and_leaves_no_temporary(tmp_path):
  result = _signalled(tmp_path, 'gc')  # issue 39, 17
  assert result.returncode == 1 and 'went on' not in result.stdout
  assert result.stderr == 'interrupted by signal 2; run the same command again\n'
  assert list(tmp_path.iterdir()) == []


def test_a_second_signal_stops_at_once_where_the_first_was_lost(tmp_path):
  result = _signalled(tmp_path, 'swallowed')
  assert result.returncode == 1 and 'went on' not in result.stdout
  assert result.stderr == 'interrupted by signal 2; run the same command again\n'
  assert list(tmp_path.iterdir()) == []


def test_processes_compare_each_value_of_the_command_and_each_config_key():
  compared = startup._compared(modes.Command('train', ['runs/a'], config=tiny_config()))
  assert compared['mode'] == 'train' and compared['workdirs'] == ['runs/a']
  assert compared['config.optim.learning_rate'] == tiny_config().optim.learning_rate
  assert compared['config.model.kwargs.widths'] == [8]  # as JSON: the same in every process
  assert 'config' not in compared
  assert 'config' not in startup._compared(modes.Command('eval', ['runs/a']))

"""Ctrl-C, SIGTERM and SIGKILL at every phase of a run: each stops cleanly (one line, no thread's
traceback at exit), keeps every checkpoint it had, and the resumed run ends with the parameters
of a run nothing stopped."""

import json
import re
import signal

import pytest

from tests.faults.battery import (
  TINY,
  assert_clean_exit,
  assert_same_state,
  assert_success,
  interrupted,
  main_py,
)

LONG = ('--config.train.num_epochs=6', '--config.eval.every_steps=0')  # 60 steps, a save each 10
MID_EPOCH = 'step 25/60'


def _flags(workdir, data_dir):
  return (*TINY, *LONG, f'--workdir={workdir}', f'--config.data.dir={data_dir}')


@pytest.fixture(scope='module')
def whole(tmp_path_factory, data_dir):
  """The run nothing stopped."""
  workdir = tmp_path_factory.mktemp('whole') / 'run'
  assert_success(main_py(*_flags(workdir, data_dir)))
  return workdir


def _history(workdir):
  return [json.loads(line) for line in (workdir / 'history.jsonl').read_text().splitlines()]


def _history_points(workdir):
  """(step, what was logged) of each record: training and validation records share steps."""
  return [(record['step'], tuple(sorted(record))) for record in _history(workdir)]


def _check_stop_and_resume(outcome, workdir, data_dir, whole, code=1):
  assert outcome.code == code, outcome
  assert_clean_exit(outcome)
  stopped_at = None
  if code == 1:
    message = outcome.lines[-1]
    assert message.startswith('interrupted: ') and 'run the same command' in message, outcome
    stopped_at = re.search(r'stopped at step (\d+)', message)
  assert_success(main_py(*_flags(workdir, data_dir)))
  assert_same_state(workdir, whole)
  points = _history_points(workdir)  # issue 25, 15
  assert len(points) == len(set(points)), 'the resumed history repeats steps'
  assert [step for step, _ in points] == sorted(step for step, _ in points)
  whole_points = _history_points(whole)
  assert set(points) <= set(whole_points) and points[-1] == whole_points[-1]
  if stopped_at:  # issue 23: the first point after resuming averages every / 2 steps or more
    first = min(r['step'] for r in _history(workdir)
                if 'train_loss' in r and r['step'] > int(stopped_at[1]))
    assert first - int(stopped_at[1]) >= 5 / 2


@pytest.mark.parametrize('name', ['SIGINT', 'SIGTERM'])
@pytest.mark.parametrize('when', ['loading cifar100', 'compiling the training step',
                                  MID_EPOCH], ids=['starting', 'compiling', 'mid-epoch'])
def test_a_signal(tmp_path, data_dir, whole, name, when):  # issue 23
  workdir = tmp_path / 'run'
  outcome = interrupted(*_flags(workdir, data_dir), when=when, signals=[getattr(signal, name)])
  _check_stop_and_resume(outcome, workdir, data_dir, whole)


def test_two_signals_in_a_row_stop_at_once_and_say_what_is_kept(tmp_path, data_dir, whole):
  workdir = tmp_path / 'run'  # issue 25, 8
  outcome = interrupted(*_flags(workdir, data_dir), when=MID_EPOCH,
                        signals=[signal.SIGINT, signal.SIGINT])
  assert 'checkpoint' in outcome.lines[-1]
  _check_stop_and_resume(outcome, workdir, data_dir, whole)


@pytest.mark.parametrize('fault', ['SIGTERM-in-save', 'SIGINT2-in-save'])
def test_a_signal_during_a_save(tmp_path, data_dir, whole, fault):  # issue 25, 8
  workdir = tmp_path / 'run'
  outcome = main_py(*_flags(workdir, data_dir), fault=fault)
  _check_stop_and_resume(outcome, workdir, data_dir, whole)


def test_sigkill_during_a_save(tmp_path, data_dir, whole):
  workdir = tmp_path / 'run'
  outcome = main_py(*_flags(workdir, data_dir), fault='SIGKILL-in-save')
  _check_stop_and_resume(outcome, workdir, data_dir, whole, code=-signal.SIGKILL)

"""Damaged, stale and foreign checkpoints and workdirs: resume falls back to the newest good
checkpoint or says exactly what to do, never trains from scratch silently, and changes nothing of
a run it refuses."""

import json
import os
import shutil
import subprocess

import pytest

from tests.faults.battery import (
  TINY,
  assert_same_state,
  assert_success,
  assert_user_error,
  fingerprint,
  main_py,
  mounted,
  steps_saved,
)
from tests.helpers import best_step


def _resume(run, *flags):
  """Trains `run` on with the config it was trained with (and `flags`)."""
  data_dir = json.loads((run / 'config.json').read_text())['data']['dir']
  return main_py(*TINY, f'--workdir={run}', f'--config.data.dir={data_dir}', *flags)


def _forget_the_last_steps(run):
  """`run` as if stopped at step 15 of its 20."""
  shutil.rmtree(run / 'checkpoints' / '20')
  return run


def _damage(checkpoint, how):
  """Truncates, or overwrites with random bytes, every file of `checkpoint`'s train state."""
  files = [p for p in (checkpoint / 'state').rglob('*') if p.is_file()]
  assert files
  for path in files:
    data = path.read_bytes()
    damaged = data[:len(data) // 2] if how == 'truncated' else os.urandom(max(64, len(data)))
    path.write_bytes(damaged)


@pytest.mark.parametrize('how', ['truncated', 'random'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(run, trained_run, how):
  _damage(run / 'checkpoints' / '20', how)  # issue 25, 6
  outcome = _resume(run)
  assert_success(outcome)
  assert 'resuming from step 15' in outcome.out and 'checkpoint 20' in outcome.out
  assert_same_state(run, trained_run)
  assert (run / 'checkpoints' / 'unreadable' / '20').is_dir(), 'the damaged one was lost'


def test_every_checkpoint_damaged_stops_and_keeps_them(run):  # issue 25, 6
  for step in steps_saved(run):
    _damage(run / 'checkpoints' / str(step), 'random')
  before = fingerprint(run)
  line = assert_user_error(_resume(run), 'can be read', 'new --workdir')
  assert 'Traceback' not in line
  assert fingerprint(run) == before


def test_a_damaged_best_checkpoint_is_evaluated_from_latest_saying_so(run):  # issue 25, 6
  _damage(run / 'checkpoints' / str(best_step(run)), 'random')
  outcome = main_py('--mode=eval', f'--workdir={run}')
  assert_success(outcome)
  assert 'best' in outcome.out and 'instead' in outcome.out


def test_a_deleted_best_checkpoint_is_evaluated_from_the_newest_saying_so(run):
  shutil.rmtree(run / 'checkpoints' / str(best_step(run)))
  outcome = main_py('--mode=eval', f'--workdir={run}')
  assert_success(outcome)
  assert 'no best checkpoint' in outcome.out


def test_a_stale_temporary_folder_is_ignored(run, trained_run):
  stale = run / 'checkpoints' / '20.orbax-checkpoint-tmp-1234567'
  shutil.move(run / 'checkpoints' / '20', stale)
  _damage(stale, 'truncated')
  assert_success(main_py('--mode=eval', f'--workdir={run}'))
  outcome = _resume(run)
  assert_success(outcome)
  assert 'resuming from step 15' in outcome.out
  assert_same_state(run, trained_run)


@pytest.mark.parametrize('flags, words', [
    (['--config.model.kwargs.widths=(16,)'], ['model.kwargs.widths (8,) -> (16,)']),
    (['--config.optim.name=adam'], ['optim.name sgd -> adam']),
    (['--config.data.batch_size=32'], ['data.batch_size 16 -> 32']),
    (['--config.optim.learning_rate=0.1', '--config.train.seed=3'],
     ['optim.learning_rate 0.05 -> 0.1', 'train.seed 0 -> 3']),
], ids=['model', 'optimizer', 'batch-size', 'two-keys'])
def test_resuming_with_another_config_is_refused_and_changes_nothing(run, flags, words):
  _forget_the_last_steps(run)  # issue 25, 5
  before = fingerprint(run)
  line = assert_user_error(_resume(run, *flags), *words)
  assert str(run / 'config.json') in line and '--workdir' in line
  assert fingerprint(run) == before
  assert_success(main_py('--mode=eval', f'--workdir={run}'))


def test_resuming_with_other_evaluation_and_logging_keys_is_allowed(run, trained_run):
  outcome = _resume(_forget_the_last_steps(run), '--config.eval.batch_size=32',
                    '--config.train.log_every_steps=3')
  assert_success(outcome)
  assert_same_state(run, trained_run)


def test_a_corrupt_config_json(run, data_dir):  # issue 25, 13
  (run / 'config.json').write_text('{"model": "cnn", ')
  for mode in ('eval', 'report'):
    assert_user_error(main_py(f'--mode={mode}', f'--workdir={run}'), 'config.json',
                      'not valid JSON', '--config=')
  assert_user_error(main_py(*TINY, f'--workdir={run}', f'--config.data.dir={data_dir}'),
                    'config.json', 'not valid JSON')


def test_a_workdir_that_is_a_file(tmp_path, data_dir):  # issue 25, 7
  path = tmp_path / 'run'
  path.write_text('not a folder')
  for args in ([*TINY, f'--config.data.dir={data_dir}'], ['--mode=eval'], ['--mode=report']):
    assert_user_error(main_py(*args, f'--workdir={path}'), str(path), 'not a folder')
  assert path.read_text() == 'not a folder'


def test_a_missing_workdir(tmp_path):
  for mode in ('eval', 'report', 'export'):
    assert_user_error(main_py(f'--mode={mode}', f'--workdir={tmp_path / "nope"}'), 'nope',
                      'train')


def _read_only(folder):
  subprocess.run(['mount', '-o', 'remount,ro', str(folder)], check=True)


def test_a_read_only_workdir_stops_before_the_work(tmp_path, trained_run):  # issue 25, 7
  with mounted(tmp_path / 'mount') as mount:
    run = mount / 'run'
    shutil.copytree(trained_run, run)
    _read_only(mount)
    before = fingerprint(run)
    assert_user_error(_resume(run), 'read-only', str(run))
    outcome = main_py('--mode=eval', f'--workdir={run}')
    assert_user_error(outcome, 'read-only', str(run))
    assert 'evaluating' not in outcome.out
    assert fingerprint(run) == before


def test_a_full_disk_keeps_the_previous_checkpoint_and_resumes_once_freed(tmp_path, trained_run):
  with mounted(tmp_path / 'mount', size='8m') as mount:
    run = _forget_the_last_steps(shutil.copytree(trained_run, mount / 'run'))
    before = steps_saved(run)  # the newest, 15, and the best
    filler = mount / 'filler'
    subprocess.run(['dd', 'if=/dev/zero', f'of={filler}', 'bs=64k'], capture_output=True)
    line = assert_user_error(_resume(run), 'disk is full')
    assert 'run the same command again' in line
    assert steps_saved(run) == before and before[-1] == 15
    filler.unlink()
    assert_success(_resume(run))
    assert_same_state(run, trained_run)

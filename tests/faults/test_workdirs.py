"""Workdirs as a careless user names and shares them: paths Orbax cannot read back, folders of
something else, one run trained twice at once or read while it trains, an ensemble written over
one of its runs, runs of one folder name, an evaluation interrupted between its two files, and
evaluations of one run at once (issue 39)."""

import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.faults.battery import (
  TINY,
  Outcome,
  assert_clean_exit,
  assert_success,
  assert_user_error,
  command,
  copy_run,
  environment,
  fingerprint,
  interrupted,
  main_py,
  steps_saved,
)
from tests.helpers import REPO


@pytest.mark.parametrize('name', ['run[1]', 'run*', 'r?n'])
def test_a_workdir_whose_path_orbax_reads_as_a_pattern(tmp_path, data_dir, name):
  """issue 39, 1: `runs/run[1]` trained to the end with checkpoints that never read back (and a
  `*` may merge another run's files): refused before anything is written."""
  workdir = tmp_path / name
  line = assert_user_error(main_py(*TINY, f'--workdir={workdir}', f'--config.data.dir={data_dir}'),
                           'pattern', 'Use a path without')
  assert str(workdir) in line
  assert not workdir.exists()


@pytest.mark.parametrize('content', ['other-config', 'notes'])
def test_training_into_a_folder_of_something_else(tmp_path, data_dir, content):
  """issue 39, 4: its config.json was replaced and its history.jsonl emptied without a word."""
  folder = tmp_path / 'mine'
  folder.mkdir()
  if content == 'other-config':
    (folder / 'config.json').write_text(json.dumps({'architectures': ['Bert'], 'hidden_size': 8}))
    (folder / 'history.jsonl').write_text('{"epoch": 1}\n')
  else:
    (folder / 'notes.txt').write_text('my thesis')
  before = fingerprint(folder)
  assert_user_error(main_py(*TINY, f'--workdir={folder}', f'--config.data.dir={data_dir}'),
                    'not a run of this project', 'new or empty --workdir')
  assert fingerprint(folder) == before


def test_an_empty_workdir_flag(data_dir):
  """issue 39, 4: `--workdir=` trained into the current folder."""
  before = fingerprint(REPO / 'configs')
  assert_user_error(main_py(*TINY, '--workdir=', f'--config.data.dir={data_dir}'),
                    '--workdir is empty')
  assert not (REPO / 'config.json').exists() and fingerprint(REPO / 'configs') == before


def test_an_ensemble_written_over_one_of_its_runs(tmp_path, trained_run):
  """issue 39, 5: `--output` naming a member overwrote that member's evaluation."""
  a, b = copy_run(trained_run, tmp_path / 'a'), copy_run(trained_run, tmp_path / 'b')
  before = fingerprint(a)
  assert_user_error(main_py('--mode=eval', f'--workdir={a}', f'--workdir={b}', f'--output={a}/'),
                    "one of the ensemble's runs", '--output=')
  assert fingerprint(a) == before
  assert_user_error(main_py('--mode=eval', f'--workdir={a}', f'--workdir={a}/.',
                            f'--output={tmp_path / "ab"}'), 'given twice')


def test_a_report_of_runs_in_folders_of_one_name(tmp_path, trained_run, data_dir):
  """issue 39, 9: the figures overwrote each other and the first run's Grad-CAM showed the second
  model's heatmaps; now the runs are named a/run and b/run."""
  a = copy_run(trained_run, tmp_path / 'a' / 'run')
  b = tmp_path / 'b' / 'run'
  assert_success(main_py(*TINY, f'--workdir={b}', f'--config.data.dir={data_dir}',
                         '--config.model.kwargs.widths=(16,)', '--config.train.num_epochs=1'))
  assert_success(main_py('--mode=eval', f'--workdir={b}'))
  out = tmp_path / 'report'
  assert_success(main_py('--mode=report', f'--workdir={a}', f'--workdir={b}', f'--output={out}'))
  confusions = sorted(p.name for p in out.glob('*_confusion.png'))
  assert confusions == ['a_run_confusion.png', 'b_run_confusion.png'], confusions
  assert 'a/run against b/run' in (out / 'report.html').read_text()


def test_a_report_of_an_evaluation_interrupted_between_its_files(tmp_path, trained_run, data_dir):
  """issue 39, 10: new probabilities beside old metrics (eval wrote one file, then the other)
  were reported as one evaluation; each file is now written with the other, and the report
  checks that they belong together."""
  run = copy_run(trained_run, tmp_path / 'run')
  other = tmp_path / 'other'
  assert_success(main_py(*TINY, f'--workdir={other}', f'--config.data.dir={data_dir}',
                         '--config.train.num_epochs=1', '--config.train.seed=1'))
  assert_success(main_py('--mode=eval', f'--workdir={other}'))
  shutil.copy(other / 'predictions_test.npz', run / 'predictions_test.npz')
  assert_user_error(main_py('--mode=report', f'--workdir={run}'), 'two different evaluations',
                    '--mode eval')


def _started(*args: str) -> subprocess.Popen:
  return subprocess.Popen(command(*args), cwd=REPO, env=environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen, timeout: int = 300) -> Outcome:
  out, err = process.communicate(timeout=timeout)
  return Outcome(process.returncode, out, err)


def test_evaluations_of_one_run_at_once(run):
  """issue 39, 11: one of three evaluations at once died on the shared temporary file."""
  processes = [_started('--mode=eval', f'--workdir={run}') for _ in range(3)]
  for process in processes:
    assert_success(_finished(process))
  with np.load(run / 'predictions_test.npz') as saved:
    assert saved['probs'].shape == (100, 100)
  assert not list(run.glob('.*partial'))


def _history_steps(workdir) -> list[int]:
  return [json.loads(line)['step'] for line in (workdir / 'history.jsonl').read_text().splitlines()
          if '"train_loss"' in line]


def test_one_training_of_a_workdir_at_a_time(tmp_path, data_dir):
  """issue 39, 8: two trainings of one workdir both crashed, leaving every step twice in
  history.jsonl; the second waits while the first runs (Ctrl-C stops the wait, changing
  nothing), then resumes where it stopped; a workdir being trained is read whole, and the lock
  of a killed training does not stop the next."""
  workdir = tmp_path / 'run'
  flags = (*TINY, f'--workdir={workdir}', f'--config.data.dir={data_dir}',
           '--config.train.num_epochs=300', '--config.early_stopping.patience=1000',
           '--config.eval.every_steps=2')  # 3,000 steps: minutes, stopped long before
  first = _started(*flags)
  deadline = time.time() + 120
  while len(steps_saved(workdir) if (workdir / 'checkpoints').is_dir() else []) < 3:
    assert first.poll() is None and time.time() < deadline, _finished(first)
    time.sleep(0.2)
  waiting = interrupted(*flags, when='waiting until it ends', signals=[signal.SIGINT])
  assert waiting.code == 1 and waiting.lines == [
      'interrupted by signal 2; run the same command again'], waiting
  assert 'is being trained now by process' in waiting.out and 'resuming' not in waiting.out
  assert_clean_exit(waiting)
  for _ in range(2):  # read while checkpoints come and go
    assert_success(main_py('--mode=eval', f'--workdir={workdir}'))
  said = tmp_path / 'second.out'
  with said.open('w') as out:
    second = subprocess.Popen(command(*flags), cwd=REPO, env=environment(), stdout=out,
                              stderr=subprocess.STDOUT, text=True)
  _wait_for_line(said, 'waiting until it ends', second)
  assert first.poll() is None, 'the first training ended before the checks'
  first.kill()  # its lock goes with it, its file stays
  first.wait()
  _wait_for_line(said, 'resuming from step', second)
  second.send_signal(signal.SIGINT)
  assert second.wait(timeout=120) == 1
  assert said.read_text().splitlines()[-1].startswith('interrupted: '), said.read_text()
  steps = _history_steps(workdir)
  assert steps == sorted(set(steps)), steps


def _wait_for_line(path, text: str, process: subprocess.Popen, timeout: int = 120) -> None:
  deadline = time.time() + timeout
  while text not in path.read_text():
    assert process.poll() is None and time.time() < deadline, path.read_text()
    time.sleep(0.05)

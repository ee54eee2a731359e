"""The process itself: several processes started with different commands or out-of-range start-up
values, a signal where Python cannot raise (a garbage collection's callback), and a
$JAX_PLATFORMS this machine cannot honour. Each stops in one line, before it changes anything."""

import pathlib
import socket
import subprocess

import pytest

from tests.faults.battery import (
  TINY,
  Outcome,
  assert_clean_exit,
  assert_user_error,
  command,
  copy_run,
  environment,
  fingerprint,
  main_py,
)
from tests.helpers import REPO


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _as_processes_of_one_run(folder: pathlib.Path, *commands: list[str],
                             timeout: int = 180) -> list[Outcome]:
  """Runs `commands` at once as the processes of one run on localhost (the N-th, --process_id=N),
  their output in files: a full pipe would stall one of them."""
  cluster = [f'--coordinator_address=127.0.0.1:{_free_port()}', f'--num_processes={len(commands)}']
  started = []
  for index, args in enumerate(commands):
    out, err = folder / f'{index}.out', folder / f'{index}.err'
    with out.open('w') as stdout, err.open('w') as stderr:
      started.append(subprocess.Popen(
          command(*args, *cluster, f'--process_id={index}'), cwd=REPO, stdout=stdout,
          stderr=stderr, env=environment(JAX_PLATFORMS='cpu'), text=True))
  try:
    codes = [process.wait(timeout=timeout) for process in started]
  finally:
    for process in started:
      process.kill()
  return [Outcome(code, (folder / f'{i}.out').read_text(), (folder / f'{i}.err').read_text())
          for i, code in enumerate(codes)]


def test_processes_of_one_run_with_different_configs_stop_naming_the_key(tmp_path, data_dir):
  # issue 39, 16: after 30 s, C++ crash dumps of the heartbeat
  workdir = tmp_path / 'run'
  given = [*TINY, f'--workdir={workdir}', f'--config.data.dir={data_dir}']
  outcomes = _as_processes_of_one_run(tmp_path, given, [*given, '--config.train.num_epochs=3'])
  for outcome in outcomes:  # process 0 too
    assert_user_error(outcome, 'process 1', 'config.train.num_epochs=3', 'process 0 has 2',
                      'the same flags and config')
  assert not workdir.exists()


def test_processes_of_one_run_evaluating_different_splits_change_nothing(tmp_path, run):
  before = fingerprint(run)  # issue 39, 16
  given = ['--mode=eval', f'--workdir={run}']
  outcomes = _as_processes_of_one_run(tmp_path, given, [*given, '--split=validation'])
  for outcome in outcomes:
    assert_user_error(outcome, "split='validation' where process 0 has 'test'")
  assert fingerprint(run) == before


@pytest.mark.parametrize('flags, words', [
    (('--coordinator_address=127.0.0.1:99999',), ('99999', '1-65535')),
    (('--coordinator_address=127.0.0.1:1234', '--coordinator_timeout=-5'),
     ('--coordinator_timeout=-5', 'positive')),
], ids=['port', 'timeout'])
def test_start_up_values_out_of_range_are_refused_before_anything_starts(run, flags, words):
  before = fingerprint(run)  # issue 39, 16: a C++ abort; a negative timeout accepted
  outcome = main_py('--mode=eval', f'--workdir={run}', *flags, '--num_processes=2',
                    '--process_id=1', timeout=60)
  assert_user_error(outcome, *words)
  assert fingerprint(run) == before


@pytest.mark.parametrize('mode, name', [('report', 'SIGINT'), ('eval', 'SIGTERM')])
def test_a_signal_in_a_garbage_collection_stops_the_command(tmp_path, reported_run, mode, name):
  # issue 39, 17: the handler's exit was 'Exception ignored' in the callback, then exit 0
  run = copy_run(reported_run, tmp_path / 'run')
  before = fingerprint(run)
  outcome = main_py(f'--mode={mode}', f'--workdir={run}', fault=f'{name}-in-gc')
  assert outcome.code == 1, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 1 and outcome.lines[0].startswith('interrupted by signal'), outcome
  assert 'run the same command' in outcome.lines[0]
  assert fingerprint(run) == before
  assert not list(run.rglob('*.partial'))  # the temporary being written is removed


@pytest.mark.parametrize('platforms', ['cuda', 'tpu', 'nonsense'])
def test_jax_platforms_this_machine_cannot_start(run, platforms):
  before = fingerprint(run)  # issue 39, 19: cuda a bare AssertionError, others a RuntimeError
  outcome = main_py('--mode=eval', f'--workdir={run}', env={'JAX_PLATFORMS': platforms})
  assert_user_error(outcome, f'JAX_PLATFORMS={platforms}', 'the CPU', 'Unset JAX_PLATFORMS',
                    'jax[cuda12]')
  assert fingerprint(run) == before

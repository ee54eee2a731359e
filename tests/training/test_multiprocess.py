"""Several processes as one run, on localhost: 2 processes x 2 CPU devices against 1 x 4.

Each case starts fresh `python main.py` processes on mock CIFAR-100 (tests/mock_main.py), joined
by jax.distributed over gloo, and compares with one process: whatever the number of processes,
the same global batches, the same model, the same predictions.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import REPO, saved_steps

pytestmark = pytest.mark.slow

# The tiny model of tests/helpers.tiny_config, as flags of configs/smoke.py.
FLAGS = ('--config=configs/smoke.py', '--config.model.kwargs.widths=(8,)',
         '--config.model.kwargs.hidden=16', '--config.data.validation_size=40',
         '--config.data.batch_size=16', '--config.eval.batch_size=48',
         '--config.train.num_epochs=2', '--config.eval.every_steps=5',
         '--config.train.log_every_steps=5', '--config.cpu.conv_backend=xla',
         '--config.eval.recalibration_images=32', '--config.data.dir=/nonexistent')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(workdir, *args, processes=2, devices=2, extra_env=None):
  """`processes` main.py processes with `devices` CPU devices each; their Popen objects."""
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'JAX_PLATFORMS': 'cpu', **(extra_env or {})}
  env.pop('CIFAR100_FLAX_TRACEBACK', None)
  cluster = []
  port = _free_port()
  started = []
  for index in range(processes):
    if processes > 1:
      cluster = [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                 f'--process_id={index}']
    started.append(subprocess.Popen(
        [sys.executable, '-m', 'tests.mock_main', *FLAGS, f'--workdir={workdir}', *cluster, *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return started


def _finish(started, timeout=300):
  """(return codes, outputs) once every process has ended."""
  outputs = [p.communicate(timeout=timeout)[0] for p in started]
  return [p.returncode for p in started], outputs


def _run(workdir, *args, **kwargs):
  codes, outputs = _finish(_start(workdir, *args, **kwargs))
  assert codes == [0] * len(codes), '\n'.join(outputs)
  return outputs


def _results(workdir):
  saved = np.load(workdir / 'predictions_test.npz')
  return saved['probs'], json.loads((workdir / 'eval_test.json').read_text())


def _final_params(workdir):
  """The parameters of the newest checkpoint, as numpy arrays (whatever wrote them)."""
  path = workdir / 'checkpoints' / str(saved_steps(workdir)[-1]) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, 'item_metadata', metadata)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                              getattr(metadata, 'tree', metadata))
  state = checkpointer.restore(path, restore_args=restore_args)
  return int(state['step']), state['params']


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
  """The reference: one process with four devices, trained and evaluated."""
  workdir = tmp_path_factory.mktemp('one')
  _run(workdir, processes=1, devices=4)
  _run(workdir, '--mode=eval', processes=1, devices=4)
  return workdir


def _assert_same_params(workdir, reference):
  (step, params), (reference_step, reference_params) = (_final_params(workdir),
                                                        _final_params(reference))
  assert step == reference_step
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params,
               reference_params)


def _assert_same_results(workdir, reference):
  probs, report = _results(workdir)
  reference_probs, reference_report = _results(reference)
  np.testing.assert_allclose(probs, reference_probs, atol=1e-4)
  for key in ('num_examples', 'top1_accuracy', 'top5_accuracy', 'checkpoint_step'):
    assert report[key] == reference_report[key], key


def _wait_for(path_glob, workdir, started, timeout=300):
  deadline = time.time() + timeout
  while not list(workdir.glob(path_glob)):
    assert time.time() < deadline and all(p.poll() is None for p in started), 'never got there'
    time.sleep(0.2)


def test_sigterm_to_one_of_two_stops_both_then_they_resume_and_evaluate_as_one(one_process,
                                                                                tmp_path):
  started = _start(tmp_path)
  # As the first checkpoint starts (its temporary folder, 5.orbax-checkpoint-tmp-*), well before
  # the processes agree on a stop at step 10: waiting for the finished folder, which Orbax
  # renames asynchronously, now and then let them run to the end first.
  _wait_for('checkpoints/5*', tmp_path, started)
  started[1].send_signal(signal.SIGTERM)
  codes, outputs = _finish(started)
  assert all(code != 0 for code in codes), outputs
  stops = [line for out in outputs for line in out.splitlines() if 'stopped at step' in line]
  assert len(stops) == 2 and stops[0] == stops[1], outputs  # the same step in both
  stopped_at = int(re.search(r'stopped at step (\d+)', stops[0])[1])
  assert stopped_at < 20 and saved_steps(tmp_path)[-1] == stopped_at
  outputs = _run(tmp_path)
  assert f'resuming from step {stopped_at}' in outputs[0]
  _run(tmp_path, '--mode=eval')
  _assert_same_params(tmp_path, one_process)
  _assert_same_results(tmp_path, one_process)
  assert 'steps/s' in outputs[0] and 'steps/s' not in outputs[1]  # process 0 alone reports
  history = [json.loads(line) for line in (tmp_path / 'history.jsonl').read_text().splitlines()]
  logged = [r['step'] for r in history if 'train_loss' in r]
  assert sorted(logged) == [5, 10, 15, 20]  # each written once, by process 0, resumed or not


def test_two_processes_evaluate_a_run_of_one_as_one_does(one_process, tmp_path):
  workdir = tmp_path / 'copy'
  shutil.copytree(one_process, workdir)
  (workdir / 'eval_test.json').unlink()
  _run(workdir, '--mode=eval')
  _assert_same_results(workdir, one_process)


def test_a_process_that_dies_ends_the_other_and_the_two_resume(one_process, tmp_path):
  started = _start(tmp_path)
  _wait_for('checkpoints/5', tmp_path, started)
  started[1].kill()
  codes, outputs = _finish(started, timeout=180)  # JAX's heartbeat timeout is 30 s here
  assert codes[0] != 0 and 'another task died' in outputs[0], outputs[0]
  _run(tmp_path)  # both died mid-run: resumed from the last checkpoint
  _assert_same_params(tmp_path, one_process)


def test_a_coordinator_that_never_answers_is_an_error_not_a_hang(tmp_path):
  # Process 1 of 2 alone: its coordinator (process 0) never comes.
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run(
      [sys.executable, 'main.py', *FLAGS, f'--workdir={tmp_path}',
       f'--coordinator_address=127.0.0.1:{_free_port()}', '--num_processes=2', '--process_id=1',
       '--coordinator_timeout=5'], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'could not join the coordinator at 127.0.0.1' in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr

"""The accelerator rehearsal: main.py's train -> stop -> resume -> eval -> predict -> export with
JAX presenting its platform as a GPU plugin does (tests/accelerator_main.py), on this CPU.

It asserts that the run gets through (on plugins `Lowered.cost_analysis()` is None), that no
CPU-only path runs (no process tuning, no oneDNN call, no rewritten layer: the compiled training
step has the operations of Flax's own layers), and that it computes what a plain CPU run of
Flax's layers computes.
"""

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from cifar100_flax.config import loading
from cifar100_flax.cpu import tuning
from cifar100_flax.data import cifar100
from cifar100_flax.training import states, steps
from tests.helpers import REPO, run_main

pytestmark = pytest.mark.slow

# The tiny CNN of tests/tiny_config.py in three stages at 8 px: its last convolution has a 2x2
# output, which the CPU path computes as a matmul; its max-pooling has a Flax form and a CPU one.
OVERRIDES = {'model.kwargs.widths': (4, 8, 8), 'model.kwargs.hidden': 0, 'data.image_size': 8,
             'data.validation_size': 40, 'data.batch_size': 16, 'eval.batch_size': 48,
             'train.num_epochs': 2, 'eval.every_steps': 5, 'train.log_every_steps': 5,
             'data.dir': '/nonexistent'}
FLAGS = ('--config=configs/smoke.py', *(f'--config.{k}={v}' for k, v in OVERRIDES.items()))
# Operations whose counts tell Flax's layers from the CPU path's (convolutions as matmuls,
# max-pooling as strided views) and from oneDNN's (custom calls).
OPERATIONS = ('stablehlo.convolution', 'stablehlo.reduce_window', 'stablehlo.select_and_scatter',
              'stablehlo.dot_general', 'stablehlo.custom_call', 'cifar100_flax_onednn')


def _as_accelerator(*args: str, record=None, stop_at_batch=None) -> subprocess.CompletedProcess:
  env = {key: value for key, value in os.environ.items()
         if key not in ('CIFAR100_FLAX_TRACEBACK', 'XLA_FLAGS')}
  env.update({'REHEARSAL_RECORD': str(record)} if record else {})
  env.update({'REHEARSAL_STOP_AT_BATCH': str(stop_at_batch)} if stop_at_batch else {})
  return subprocess.run([sys.executable, '-m', 'tests.accelerator_main', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def _ok(result: subprocess.CompletedProcess) -> str:
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout + result.stderr


def _train_step_text(record) -> str:
  texts = [p.read_text() for p in sorted(record.glob('compiled_*.mlir'))]
  train = [text for text in texts if '@jit_train_step' in text]
  assert train, f'no training step among {len(texts)} compiled programs'
  return train[0]


def _counts(text: str) -> dict:
  return {op: text.count(op) for op in OPERATIONS}


def _reference_counts(cpu_speed_path: bool) -> dict:
  """The operation counts of the training step built with Flax's layers (or the CPU path's)."""
  config = loading.config_from_file(str(REPO / 'configs/smoke.py'))
  config.update_from_flattened_dict({**OVERRIDES, 'cpu.speed_path': cpu_speed_path,
                                     'cpu.conv_backend': 'xla'})
  state, _ = states.create_train_state(config, 10)
  batch = {'image': jnp.zeros((16, *cifar100.IMAGE_SHAPE), jnp.uint8),
           'label': jnp.zeros(16, jnp.int32), 'flip': jnp.zeros(16, bool)}
  return _counts(steps.jit_train_step(config).lower(state, batch).as_text())


def _pngs(folder) -> list:
  rng = np.random.default_rng(0)
  folder.mkdir()
  for i in range(3):
    PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(folder / f'{i}.png')
  return sorted(str(p) for p in folder.iterdir())


def _predicted(path) -> list:
  with open(path) as f:
    return [row['class_1'] for row in csv.DictReader(f)]


def test_a_run_presented_as_a_gpu_plugin_trains_resumes_evaluates_predicts_and_exports(tmp_path):
  record, workdir, plain = tmp_path / 'record', tmp_path / 'gpu', tmp_path / 'plain'
  images = _pngs(tmp_path / 'pngs')
  stopped = _as_accelerator('--mode=train', *FLAGS, f'--workdir={workdir}', record=record,
                            stop_at_batch=7)
  assert stopped.returncode == 1 and 'stopped at step' in stopped.stderr, stopped.stderr
  resumed = _ok(_as_accelerator('--mode=train', *FLAGS, f'--workdir={workdir}', record=record))
  assert 'resuming from step' in resumed and 'Flax layers' in resumed
  _ok(_as_accelerator('--mode=eval', f'--workdir={workdir}', record=record))
  _ok(_as_accelerator('--mode=predict', f'--workdir={workdir}', *images))
  _ok(_as_accelerator('--mode=export', '--format=stablehlo', f'--workdir={workdir}'))
  assert (workdir / 'export' / 'model.jax_export').is_file()

  # No CPU-only path: no process tuning, no XLA:CPU flags, the layers of Flax.
  assert not (record / 'tuning_configured').exists()
  assert not any(name in (record / 'xla_flags').read_text() for name in tuning.XLA_CPU_FLAGS)
  counts = _counts(_train_step_text(record))
  assert counts == _reference_counts(cpu_speed_path=False)
  assert counts != _reference_counts(cpu_speed_path=True)  # tells them apart
  assert counts['cifar100_flax_onednn'] == 0
  # FLOPs counted from the compiled step (the lowered one has no count).
  report = json.loads((workdir / 'eval_test.json').read_text())
  assert report['train_flops'] and report['train_flops'] > 0

  # The same results as a plain run of Flax's layers on the CPU, without the masquerade.
  _ok(run_main('--mode=train', *FLAGS, '--config.cpu.speed_path=False', '--cpu_tuning=off',
               f'--workdir={plain}'))
  _ok(run_main('--mode=eval', f'--workdir={plain}'))
  _ok(run_main('--mode=predict', f'--workdir={plain}', *images))
  ours, theirs = (np.load(w / 'predictions_test.npz')['probs'] for w in (workdir, plain))
  np.testing.assert_allclose(ours, theirs, atol=1e-5)
  assert _predicted(workdir / 'predictions.csv') == _predicted(plain / 'predictions.csv')
  assert jax.default_backend() == 'cpu'  # this process was not presented as anything else

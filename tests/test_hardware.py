"""What JAX will run on, judged before it starts, and the devices' peaks."""

import itertools
import os
import subprocess
import sys
import types

import jax
import pytest

from cifar100_flax import console, hardware
from tests.helpers import REPO

_JUDGED = """
import os
from cifar100_flax import hardware
from cifar100_flax.cpu import tuning
print(hardware.expected_platform(), tuning.configure_if(os.environ['SETTING']),
      'xla_cpu' in os.environ.get('XLA_FLAGS', ''))
"""


def _judged(tmp_path, setting='auto', jax_platforms=None, plugin=False) -> list:
  """What a new process judges: (platform, whether it tuned, whether XLA_FLAGS has CPU flags)."""
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'XLA_FLAGS')}
  env.update(SETTING=setting, PYTHONPATH=str(REPO))
  if jax_platforms:
    env['JAX_PLATFORMS'] = jax_platforms
  if plugin:  # as jax-cuda12-plugin installs itself: a module of the jax_plugins namespace
    (tmp_path / 'jax_plugins' / 'xla_cuda12').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'jax_plugins' / 'xla_cuda12' / '__init__.py').write_text('')
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), str(REPO)])
  return subprocess.run([sys.executable, '-c', _JUDGED], env=env, cwd=tmp_path, check=True,
                        capture_output=True, text=True).stdout.split()


def test_the_cpu_is_tuned_where_jax_will_run_on_it(tmp_path):
  assert _judged(tmp_path) == ['cpu', 'True', 'True']
  assert _judged(tmp_path, jax_platforms='cpu') == ['cpu', 'True', 'True']
  assert _judged(tmp_path, setting='off') == ['cpu', 'False', 'False']


def test_a_plugin_or_jax_platforms_means_an_accelerator_and_no_tuning_unless_forced(tmp_path):
  assert _judged(tmp_path, plugin=True) == ['accelerator', 'False', 'False']
  assert _judged(tmp_path, jax_platforms='cuda,cpu') == ['cuda', 'False', 'False']
  assert _judged(tmp_path, setting='on', plugin=True) == ['accelerator', 'True', 'True']


def test_peaks_are_known_by_device_kind_and_unknown_on_the_cpu(monkeypatch):
  assert hardware.peak_flops_per_device('float32') is None
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  for kind, bf16, fp32 in (('NVIDIA H100 80GB HBM3', 989e12, 495e12),
                           ('NVIDIA H100 PCIe', 756e12, 378e12), ('TPU v5 lite', 197e12, 197e12)):
    monkeypatch.setattr(jax, 'devices', lambda kind=kind: [types.SimpleNamespace(device_kind=kind)])
    assert hardware.peak_flops_per_device('bfloat16') == bf16
    assert hardware.peak_flops_per_device('float32') == fp32
  monkeypatch.setattr(jax, 'devices', lambda: [types.SimpleNamespace(device_kind='Radeon X')])
  assert hardware.peak_flops_per_device('bfloat16') is None


def test_the_training_line_shows_images_per_second_and_mfu_where_the_peak_is_known(monkeypatch):
  clock = itertools.cycle([100.0, 110.0])  # each line: its first step, then its format
  monkeypatch.setattr(console.time, 'perf_counter', lambda: next(clock))
  line = console.TrainingLine(total_steps=100, steps_per_epoch=10, batch_size=50,
                              peak_flops_per_device=1e12 / jax.device_count())
  line.first_step_done(1)
  text = line.format(21, {'train_loss': 1.0}, step_flops=2e10)  # 2 steps/s of 2e10 FLOPs
  assert '2.00 steps/s' in text and '100 images/s' in text and 'MFU 4.0%' in text
  unknown = console.TrainingLine(100, 10, 50)
  unknown.first_step_done(1)
  assert 'MFU' not in unknown.format(21, {}, step_flops=2e10)


@pytest.mark.parametrize('cost', [None, {}, [], [{'flops': 0.0}]])
def test_a_backend_without_a_count_gives_no_flops(cost):
  from cifar100_flax import steps
  assert steps._flops(cost) is None
  assert steps._flops([{'flops': 5.0}]) == steps._flops({'flops': 5.0}) == 5.0

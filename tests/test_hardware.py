"""What JAX will run on, judged before it starts; a $JAX_PLATFORMS it cannot start; the devices'
peaks."""

import os
import subprocess
import sys
import types

import jax
import pytest

from cifar100_flax import hardware
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


_STARTED = """
from cifar100_flax import hardware
try:
  hardware.start()
  print('started')
except hardware.PlatformError as e:
  print(e)
"""


def _started(jax_platforms: str) -> str:
  """What a new process with $JAX_PLATFORMS=`jax_platforms` says as JAX's backends start."""
  env = {**os.environ, 'JAX_PLATFORMS': jax_platforms, 'PYTHONPATH': str(REPO)}
  return subprocess.run([sys.executable, '-c', _STARTED], env=env, check=True,
                        capture_output=True, text=True).stdout.strip()


def test_jax_platforms_this_machine_cannot_start_is_said_with_what_it_has():
  if hardware.accelerator_plugins():
    pytest.skip('JAX has an accelerator plugin here, which may start')
  assert _started('cpu') == 'started'
  said = _started('cuda')  # issue 39, 19: JAX's bare AssertionError where no NVIDIA GPU is seen
  assert said.startswith('JAX_PLATFORMS=cuda asks JAX for what it cannot start here ('), said
  assert "this machine's JAX has the CPU only (no accelerator plugin is installed)" in said
  assert 'Unset JAX_PLATFORMS' in said and 'jax[cuda12]' in said
  assert "Backend 'nonsense' is not in the list of known backends" in _started('nonsense')


def test_cpu_info_reads_the_first_cores_fields(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n'
                     'cpu MHz\t\t: 3700.000\nflags\t\t: fpu avx512f avx512_bf16\n\n'
                     'processor\t: 1\nmodel name\t: another\n')
  info = hardware.cpu_info(str(cpuinfo))
  assert info['model name'] == 'AMD EPYC 9R14' and info['vendor_id'] == 'AuthenticAMD'
  assert float(info['cpu MHz']) == 3700.0 and 'avx512_bf16' in info['flags'].split()
  assert hardware.cpu_info(str(tmp_path / 'none')) == {}

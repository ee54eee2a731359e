import ctypes
import os

import pytest

from cifar100_flax import cpu_tuning


def test_configure_adds_the_xla_flags_and_keeps_the_users(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  cpu_tuning.configure()
  flags = os.environ['XLA_FLAGS'].split()
  assert flags[0] == '--xla_force_host_platform_device_count=4'
  for name, value in cpu_tuning.XLA_CPU_FLAGS.items():
    assert f'--{name}={value}' in flags


def test_a_flag_the_user_set_wins(monkeypatch):
  name = next(iter(cpu_tuning.XLA_CPU_FLAGS))
  monkeypatch.setenv('XLA_FLAGS', f'--{name}=individual_dot')
  cpu_tuning.configure()
  assert os.environ['XLA_FLAGS'].count(f'--{name}=') == 1
  assert f'--{name}=individual_dot' in os.environ['XLA_FLAGS']


def _cpu_flags() -> set:
  try:
    with open('/proc/cpuinfo') as f:
      return set(next(line for line in f if line.startswith('flags')).split())
  except (OSError, StopIteration):
    return set()


@pytest.mark.skipif('amx_tile' not in _cpu_flags(), reason='the CPU has no AMX')
def test_configure_is_granted_the_amx_registers():
  cpu_tuning.configure()
  granted = ctypes.c_uint64()
  libc = ctypes.CDLL(None)
  assert libc.syscall(158, 0x1022, ctypes.byref(granted)) == 0  # ARCH_GET_XCOMP_PERM
  assert granted.value & (1 << 18)  # XFEATURE_XTILEDATA

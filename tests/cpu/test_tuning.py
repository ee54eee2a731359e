"""cpu.tuning changes process-wide settings (malloc, AMX, XLA_FLAGS): each test runs it in a
subprocess, so that the test process keeps its own."""

import os
import subprocess
import sys

import pytest

from cifar100_flax.cpu import tuning
from tests.helpers import REPO

_CONFIGURED = """
import ctypes, os, sys
from cifar100_flax.cpu import tuning
tuning.configure()
granted = ctypes.c_uint64()
if sys.platform.startswith('linux'):
  ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(granted))  # ARCH_GET_XCOMP_PERM
print(granted.value)
print(os.environ['XLA_FLAGS'])
"""


def _configured(xla_flags: str) -> tuple[int, str]:
  """(the AMX permission bits, $XLA_FLAGS) of a process after configure()."""
  env = {**os.environ, 'XLA_FLAGS': xla_flags}
  out = subprocess.run([sys.executable, '-c', _CONFIGURED], check=True, capture_output=True,
                       text=True, cwd=REPO, env=env).stdout.splitlines()
  return int(out[0]), out[1]


def test_configure_adds_the_xla_flags_and_keeps_the_users():
  flags = _configured('--xla_force_host_platform_device_count=4')[1].split()
  assert flags[0] == '--xla_force_host_platform_device_count=4'
  for name, value in tuning.XLA_CPU_FLAGS.items():
    assert f'--{name}={value}' in flags


def test_a_flag_the_user_set_wins():
  name = next(iter(tuning.XLA_CPU_FLAGS))
  flags = _configured(f'--{name}=individual_dot')[1]
  assert flags.count(f'--{name}=') == 1 and f'--{name}=individual_dot' in flags


def _cpu_flags() -> set:
  try:
    with open('/proc/cpuinfo') as f:
      return set(next(line for line in f if line.startswith('flags')).split())
  except (OSError, StopIteration):
    return set()


@pytest.mark.skipif('amx_tile' not in _cpu_flags(), reason='the CPU has no AMX')
def test_configure_is_granted_the_amx_registers():
  assert _configured('')[0] & (1 << 18)  # XFEATURE_XTILEDATA


_FAULTS_OF_A_REUSED_BLOCK = """
import ctypes, resource, sys, threading
from cifar100_flax.cpu import tuning
if sys.argv[1] == 'tuned':
  tuning.configure()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20

def allocate_touch_free():  # as XLA's worker threads do with a step's buffers
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)

def in_a_thread():
  thread = threading.Thread(target=allocate_touch_free)
  thread.start()
  thread.join()

in_a_thread()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
in_a_thread()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_a_reused_block(mode: str) -> int:
  out = subprocess.run([sys.executable, '-c', _FAULTS_OF_A_REUSED_BLOCK, mode], check=True,
                       capture_output=True, text=True, cwd=REPO)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="glibc's malloc")
def test_a_freed_large_block_is_reused_without_page_faults():
  pages = (256 << 20) // os.sysconf('SC_PAGE_SIZE')
  assert _faults_of_a_reused_block('default') > pages // 2  # mapped anew, faulted in anew
  assert _faults_of_a_reused_block('tuned') < pages // 100

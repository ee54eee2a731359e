import ctypes
import os
import subprocess
import sys

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


_FAULTS_OF_A_REUSED_BLOCK = """
import ctypes, resource, sys, threading
from cifar100_flax import cpu_tuning
if sys.argv[1] == 'tuned':
  cpu_tuning.configure()
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
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="glibc's malloc")
def test_a_freed_large_block_is_reused_without_page_faults():
  pages = (256 << 20) // os.sysconf('SC_PAGE_SIZE')
  assert _faults_of_a_reused_block('default') > pages // 2  # mapped anew, faulted in anew
  assert _faults_of_a_reused_block('tuned') < pages // 100

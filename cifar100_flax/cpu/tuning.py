"""Process-wide settings that make XLA:CPU train convnets faster; call `configure()` (or
`configure_if(--cpu_tuning)`) before JAX starts. On a GPU or TPU they would tune nothing that
computes the model, and malloc's single arena would slow the input pipeline's threads.

Each was measured with bench/throughput.py (the figures are in docs/speed.md):
- XLA hands convolutions to YNNPACK by default, whose kernel gradient of a 3x3 convolution is
  several times slower than XLA's own Eigen kernels; XNNPACK (the older library) takes the
  convolutions instead, and the kernel gradients it cannot take fall back to Eigen. Dots and
  reductions stay with YNNPACK.
- Elementwise ops stay with XLA's own loop fusions: YNNPACK's elementwise fusions cannot take a
  broadcast operand, so XLA writes every broadcast bias or constant out to a whole
  activation-sized tensor first.
- Linux lends a process the AMX tile registers (Sapphire Rapids and later) only once it asks;
  YNNPACK's bfloat16 reductions use them without asking and die of SIGILL unless oneDNN happened
  to ask first, so `configure` asks.
- XLA:CPU allocates each step's buffers on its worker threads, from glibc's per-thread arenas,
  which map any block above 64 MB afresh: every step then paid a page fault and a zeroed page for
  every 4 KiB of its buffers. One arena, no mmap and no trimming keep freed blocks in the heap for
  the next step.
"""

import ctypes
import os
import platform
import sys

from cifar100_flax import hardware

XLA_CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,reduce',
    'xla_cpu_experimental_xnn_fusion_type': 'individual_convolution',
}
SETTINGS = ('auto', 'on', 'off')  # of the entry points' --cpu_tuning
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18  # x86-64 Linux


def configure_if(setting: str) -> bool:
  """`configure()` if `setting` is 'on', or 'auto' and JAX will run on the CPU
  (hardware.expected_platform); whether it did."""
  if setting == 'on' or (setting == 'auto' and hardware.expected_platform() == 'cpu'):
    configure()
    return True
  return False


def configure() -> None:
  """Adds XLA_CPU_FLAGS to $XLA_FLAGS (a flag the user set wins), tunes glibc's malloc and asks
  Linux for the AMX registers."""
  flags = os.environ.get('XLA_FLAGS', '')
  for name, value in XLA_CPU_FLAGS.items():
    if f'--{name}=' not in flags:
      flags = f'{flags} --{name}={value}'.strip()
  os.environ['XLA_FLAGS'] = flags
  if not sys.platform.startswith('linux'):
    return
  libc = ctypes.CDLL(None)
  if platform.machine() == 'x86_64':
    libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)  # fails without AMX
  if hasattr(libc, 'mallopt'):  # glibc's; musl has none to tune
    libc.mallopt(_M_ARENA_MAX, 1)
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)

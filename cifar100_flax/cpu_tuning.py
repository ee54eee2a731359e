"""Process-wide settings that make XLA:CPU train convnets faster; call `configure()` before JAX starts.

The flags and malloc settings were measured with bench/throughput.py on the project's 2-core CPU
(see README, Speed):
- XLA hands convolutions to YNNPACK by default, and YNNPACK computes the kernel gradient of a 3x3
  convolution 2-5x slower than XLA's own Eigen kernels; dots and reductions stay with YNNPACK.
  XNNPACK (the older library) takes the convolutions instead: its forward and input gradient of a
  3x3 conv on 32x32x32 run in 27 ms against Eigen's 38 (batch 256), and the kernel gradients it
  cannot take fall back to Eigen.
- Elementwise ops stay with XLA's own loop fusions: YNNPACK's elementwise fusions cannot take a
  broadcast operand, so XLA writes every broadcast bias or constant out to a whole activation-sized
  tensor first (the custom CNN's step, batch 256: 119 of its 402 ms).
- Linux lends a process the AMX tile registers (Sapphire Rapids and later) only once it asks;
  YNNPACK's bfloat16 reductions use them without asking and die of SIGILL unless oneDNN happened
  to ask first, so `configure` asks.
- XLA:CPU allocates each step's buffers (airbench's float32 step at batch 256: one 426 MB block)
  on its worker threads, from glibc's per-thread arenas, which cannot hold a block that large: it
  was mapped and unmapped every step, and the step paid a page fault and a zeroed page for every 4
  KiB of it (104,000 faults; the step took 710 ms, now 625; resnet18: 300,000, 3.28 s, now 2.94).
  One arena, no mmap and no trimming keep freed blocks in the heap for the next step.
"""

import ctypes
import os
import platform
import sys

XLA_CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,reduce',
    'xla_cpu_experimental_xnn_fusion_type': 'individual_convolution',
}
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18  # x86-64 Linux


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

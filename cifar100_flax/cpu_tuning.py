"""Process-wide settings that make XLA:CPU train convnets faster; call `configure()` before JAX starts.

Both were measured with bench/throughput.py on the project's 2-core CPU (see README, Speed):
- XLA hands convolutions to YNNPACK by default, and YNNPACK computes the kernel gradient of a 3x3
  convolution 2-5x slower than XLA's own Eigen kernels; dots, elementwise ops and reductions stay
  with YNNPACK. XNNPACK (the older library) takes the convolutions instead: its forward and input
  gradient of a 3x3 conv on 32x32x32 run in 27 ms against Eigen's 38 (batch 256), and the kernel
  gradients it cannot take fall back to Eigen.
- glibc serves blocks above 32 MB with mmap and unmaps them on free, so every training step pays
  page faults for its large activations anew; raising the mmap threshold keeps them in the heap.
"""

import ctypes
import os
import sys

XLA_CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,eltwise,reduce',
    'xla_cpu_experimental_xnn_fusion_type': 'individual_convolution',
}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_HEAP_BLOCK_BYTES = 1 << 30


def configure() -> None:
  """Adds XLA_CPU_FLAGS to $XLA_FLAGS (a flag the user set wins) and tunes glibc's malloc."""
  flags = os.environ.get('XLA_FLAGS', '')
  for name, value in XLA_CPU_FLAGS.items():
    if f'--{name}=' not in flags:
      flags = f'{flags} --{name}={value}'.strip()
  os.environ['XLA_FLAGS'] = flags
  if sys.platform.startswith('linux'):
    try:
      libc = ctypes.CDLL('libc.so.6')
    except OSError:  # Not glibc (e.g. musl): nothing to tune.
      return
    libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCK_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_BLOCK_BYTES)

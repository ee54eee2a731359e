"""What JAX runs on: its platform as judged before it starts, starting it (a $JAX_PLATFORMS it
cannot honour said in one line), and its devices' peak FLOP/s.

main.py decides whether to tune the process for XLA:CPU before JAX starts its backends (XLA reads
its flags once, then), so it cannot ask JAX; `expected_platform` reads what JAX itself will read.
"""

import importlib.metadata
import importlib.util
import os
import pathlib
import pkgutil

import jax

from cifar100_flax.errors import UserError

# Dense peak FLOP/s of one device, from its maker's data sheet, by (a part of) JAX's device_kind;
# (bfloat16, float32). JAX's default precision multiplies float32 on GPUs as TF32 and on TPUs in
# bfloat16 passes, so those are the float32 peaks. The first matching name counts.
_PEAK_FLOPS = (
    ('H100 PCIe', (756e12, 378e12)),
    ('H100', (989e12, 495e12)),  # SXM and NVL
    ('H200', (989e12, 495e12)),
    ('GH200', (989e12, 495e12)),
    ('B200', (2250e12, 1100e12)),
    ('A100', (312e12, 156e12)),
    ('L4', (121e12, 60e12)),
    ('TPU v4', (275e12, 275e12)),
    ('TPU v5 lite', (197e12, 197e12)),
    ('TPU v5p', (459e12, 459e12)),
    ('TPU v5', (459e12, 459e12)),
    ('TPU v6 lite', (918e12, 918e12)),
)


def accelerator_plugins() -> list[str]:
  """The PJRT plugins JAX will load as it starts (CUDA, ROCm, TPU...): the modules of the
  `jax_plugins` namespace and entry points, and libtpu, as jax/_src/xla_bridge.py finds them."""
  names = [entry.value for entry in importlib.metadata.entry_points(group='jax_plugins')]
  try:
    import jax_plugins
    names += [name for _, name, _ in pkgutil.iter_modules(jax_plugins.__path__)]
  except ModuleNotFoundError:
    pass
  if importlib.util.find_spec('libtpu') is not None:
    names.append('libtpu')
  return sorted(set(names))


class PlatformError(UserError):
  """$JAX_PLATFORMS asks for a platform this machine's JAX cannot start."""


def start() -> None:
  """Starts JAX's backends (after jax.distributed joins the processes, before any computation).
  A $JAX_PLATFORMS that this machine cannot honour is a PlatformError saying what it asked for,
  what there is and what to do; JAX raises a bare AssertionError (where it skipped every platform
  asked for: 'cuda' without a visible NVIDIA GPU) or a RuntimeError."""
  try:
    jax.devices()
  except (AssertionError, RuntimeError) as e:
    asked = jax.config.jax_platforms
    if not asked:
      raise
    plugins = accelerator_plugins()
    has = (f'the CPU and the plugins {", ".join(plugins)}' if plugins
           else 'the CPU only (no accelerator plugin is installed)')
    raise PlatformError(
        f'JAX_PLATFORMS={asked} asks JAX for what it cannot start here ({_why_not_started(e)}); '
        f'this machine\'s JAX has {has}. Unset JAX_PLATFORMS (JAX then takes what it finds), or '
        f'on a machine with the accelerator install its JAX: pip install -U "jax[cuda12]" '
        f'(NVIDIA GPUs) or "jax[tpu]" (Cloud TPUs)') from e


def _why_not_started(error: BaseException) -> str:
  """JAX's reason, less its prefix and its own advice."""
  if isinstance(error, AssertionError):
    return 'no NVIDIA GPU is visible'
  reason = str(error).split(': ', 1)[-1]
  return reason.split(" (set JAX_PLATFORMS=''", 1)[0].rstrip('.')


def expected_platform() -> str:
  """The platform JAX will run on, judged without starting it: the first of $JAX_PLATFORMS
  (--jax_platforms), else 'accelerator' where a PJRT plugin is installed, else 'cpu'."""
  platforms = jax.config.jax_platforms or os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip()
  if accelerator_plugins() or os.environ.get('PJRT_NAMES_AND_LIBRARY_PATHS'):
    return 'accelerator'
  return 'cpu'


def peak_flops_per_device(dtype: str) -> float | None:
  """The dense peak FLOP/s of one of JAX's devices for `dtype` ('float32' or 'bfloat16'), or None
  where this table does not know the device (every CPU)."""
  if jax.default_backend() == 'cpu':
    return None
  kind = jax.devices()[0].device_kind
  for name, peaks in _PEAK_FLOPS:
    if name in kind:
      return peaks[0] if dtype == 'bfloat16' else peaks[1]
  return None


def cpu_info(path: str = '/proc/cpuinfo') -> dict[str, str]:
  """The first core's fields in `path` ('model name', 'vendor_id', 'flags', 'cpu MHz', ...);
  empty where there is no such file (not Linux)."""
  info = {}
  try:
    lines = pathlib.Path(path).read_text().splitlines()
  except OSError:
    return info
  for line in lines:
    if not line.strip():
      break  # the first core's block ends
    key, _, value = line.partition(':')
    info[key.strip()] = value.strip()
  return info


def describe() -> str:
  """What this process's JAX computes on, in words: '1 × NVIDIA H100 80GB HBM3', or for the CPU
  its model and the cores this process may use."""
  if jax.default_backend() == 'cpu':
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f"{cpu_info().get('model name', 'CPU')}, {cores} cores"
  return f'{jax.device_count()} × {jax.devices()[0].device_kind}'

"""2-D convolutions and matmuls on oneDNN inside jitted JAX code on the CPU, with their gradients.

XLA:CPU's convolutions (Eigen, XNNPACK, YNNPACK) run a 3x3 convolution's forward and backward
passes markedly slower than oneDNN, PyTorch's CPU library, and compute bfloat16 ones in float32
(docs/speed.md). csrc/onednn_conv.cc wraps oneDNN's three convolution passes and its matmul as XLA
FFI handlers; this module builds it with a C++17 compiler against oneDNN 3.2 from PyPI
(requirements.txt: `onednn-cpu-gomp`, `onednn-devel-cpu-gomp`) or, without them, the system's
oneDNN 2.x or 3.x (`apt-get install libdnnl-dev`), caches the library, and exposes `conv` and
`matmul` with custom VJPs.

Nothing is built on import or by validating a config: `resolve(config.cpu.conv_backend)` builds the
extension the first time an entry point asks for oneDNN, and the model is then built with
`layers.conv_module(backend)`. 'auto' picks oneDNN on a single CPU device when the extension
builds, XLA otherwise (XLA cannot split a foreign call across devices, nor run it on an
accelerator).
"""

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sysconfig
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cifar100_flax import console
from cifar100_flax.errors import ConfigError, require

BACKENDS = ('auto', 'onednn', 'xla')
_SOURCE = pathlib.Path(__file__).resolve().parent / 'csrc' / 'onednn_conv.cc'
_PASSES = ('Forward', 'InputGradient', 'KernelGradient')


class Unavailable(RuntimeError):
  """The extension cannot be built or loaded here; the message says why."""


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('CIFAR100_FLAX_CACHE',
                                     pathlib.Path.home() / '.cache' / 'cifar100_flax'))


def _onednn_flags() -> list[str]:
  """Compiler flags for the pip-installed oneDNN if there is one (its wheels install under the
  environment's data prefix), none for the system's."""
  prefix = pathlib.Path(sysconfig.get_paths()['data'])
  if not (prefix / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists():
    return []
  return [f'-I{prefix / "include"}', f'-L{prefix / "lib"}', f'-Wl,-rpath,{prefix / "lib"}']


def _build(compiler: str) -> pathlib.Path:
  """Compiles the extension into the cache (once per source, JAX, compiler and oneDNN) and
  returns it."""
  source = _SOURCE.read_bytes()
  onednn_flags = _onednn_flags()
  digest = hashlib.sha256(source + jax.__version__.encode() + compiler.encode() +
                          ' '.join(onednn_flags).encode()).hexdigest()[:16]
  library = _cache_dir() / f'onednn_conv-{digest}.so'
  if library.exists():
    return library
  library.parent.mkdir(parents=True, exist_ok=True)
  with (tempfile.TemporaryDirectory(dir=library.parent) as tmp,
        console.phase(f'building the oneDNN convolutions into {library} (once)')):
    built = pathlib.Path(tmp) / library.name
    command = [compiler, '-O2', '-std=c++17', '-shared', '-fPIC', '-Wno-return-type',
               *onednn_flags, f'-I{jax.ffi.include_dir()}', str(_SOURCE), '-o', str(built),
               '-ldnnl']
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
      raise Unavailable(f'building {_SOURCE.name} failed ({" ".join(command)}):\n'
                        f'{result.stderr[-2000:]}')
    os.replace(built, library)  # atomic: a concurrent build sees a whole library or none
  return library


@functools.cache
def _register() -> ctypes.CDLL:
  """Builds, loads and registers the FFI targets and returns the library; raises Unavailable
  (remembered) if it cannot."""
  if jax.default_backend() != 'cpu':
    raise Unavailable(f'oneDNN convolutions run on the CPU; this is {jax.default_backend()}')
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if not compiler:
    raise Unavailable('no C++ compiler (set $CXX or install g++)')
  try:
    library = ctypes.cdll.LoadLibrary(str(_build(compiler)))
  except OSError as e:
    raise Unavailable(f'loading the extension failed: {e}') from e
  for name in _PASSES:
    jax.ffi.register_ffi_target(f'cifar100_flax_onednn_conv_{name}',
                                jax.ffi.pycapsule(getattr(library, f'OnednnConv{name}')),
                                platform='cpu')
  jax.ffi.register_ffi_target('cifar100_flax_onednn_matmul',
                              jax.ffi.pycapsule(library.OnednnMatmul),
                              platform='cpu')
  return library


@functools.cache
def takes_bfloat16() -> bool:
  """Whether oneDNN has bfloat16 kernels for this CPU (not without AVX-512; logs it once)."""
  if _register().OnednnTakesBfloat16():
    return True
  logging.warning('oneDNN has no bfloat16 kernels for this CPU: XLA runs the bfloat16 '
                  'convolutions')
  return False


@functools.cache
def available() -> bool:
  """Whether the extension builds and loads here (logs why not, once)."""
  try:
    _register()
  except Unavailable as e:
    logging.warning('oneDNN convolutions unavailable, XLA runs them: %s', e)
    return False
  return True


def resolve(backend: str) -> str:
  """'onednn' or 'xla' for config.cpu.conv_backend; ConfigError if it names neither or cannot be
  had."""
  if backend not in BACKENDS:
    raise ConfigError(f'config.cpu.conv_backend={backend!r} is not one of {list(BACKENDS)}')
  if backend == 'auto':
    single_cpu = jax.default_backend() == 'cpu' and jax.device_count() == 1
    return 'onednn' if single_cpu and available() else 'xla'
  if backend == 'onednn':
    if jax.default_backend() != 'cpu':
      raise ConfigError(f"config.cpu.conv_backend=onednn runs on the CPU; this run is on "
                        f"{jax.default_backend()}: use 'auto' or 'xla'.")
    try:
      _register()
    except Unavailable as e:
      raise ConfigError(f'config.cpu.conv_backend=onednn, but {e}. Install a C++ compiler and '
                        "oneDNN (g++; pip install -r requirements.txt), or use 'auto'/'xla'."
                        ) from e
    if jax.device_count() > 1:
      raise ConfigError('config.cpu.conv_backend=onednn runs on one device; this run has '
                        f"{jax.device_count()}: use 'auto' or 'xla'.")
  return backend


def supports(lhs: jax.Array, rhs: jax.Array) -> bool:
  """Whether `conv` takes these operands on this CPU (the layout and grouping are the caller's
  to check)."""
  if lhs.ndim != 4 or lhs.dtype != rhs.dtype:
    return False
  return lhs.dtype == jnp.float32 or (lhs.dtype == jnp.bfloat16 and takes_bfloat16())


def _call(name: str, result: jax.ShapeDtypeStruct, strides, padding, groups,
          *operands) -> jax.Array:
  return jax.ffi.ffi_call(f'cifar100_flax_onednn_conv_{name}', result)(
      *operands, strides=np.array(strides, np.int64),
      padding_low=np.array([lo for lo, _ in padding], np.int64),
      padding_high=np.array([hi for _, hi in padding], np.int64), groups=np.int64(groups))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
         padding: tuple[tuple[int, int], tuple[int, int]], groups: int = 1) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, padding, feature_group_count=groups)` of NHWC
  images and an HWIO kernel of x's dtype (float32 or bfloat16), without dilation."""
  _register()
  out = [(size + lo + hi - k) // s + 1
         for size, (lo, hi), k, s in zip(x.shape[1:3], padding, kernel.shape[:2], strides)]
  return _call('Forward', jax.ShapeDtypeStruct((x.shape[0], *out, kernel.shape[3]), x.dtype),
               strides, padding, groups, x, kernel)


def _conv_forward(x, kernel, strides, padding, groups):
  return conv(x, kernel, strides, padding, groups), (x, kernel)


def _conv_backward(strides, padding, groups, residuals, output_gradient):
  x, kernel = residuals
  output_gradient = output_gradient.astype(x.dtype)
  x_gradient = _call('InputGradient', jax.ShapeDtypeStruct(x.shape, x.dtype), strides, padding,
                     groups, kernel, output_gradient)
  # oneDNN accumulates a bfloat16 kernel gradient in float32 and can hand it over as such.
  kernel_gradient = _call('KernelGradient', jax.ShapeDtypeStruct(kernel.shape, jnp.float32),
                          strides, padding, groups, x, output_gradient)
  return x_gradient, kernel_gradient.astype(kernel.dtype)


conv.defvjp(_conv_forward, _conv_backward)


def _matmul_call(a: jax.Array, b: jax.Array, dtype, transpose_a: bool = False,
                 transpose_b: bool = False) -> jax.Array:
  rows = a.shape[1] if transpose_a else a.shape[0]
  cols = b.shape[0] if transpose_b else b.shape[1]
  return jax.ffi.ffi_call('cifar100_flax_onednn_matmul', jax.ShapeDtypeStruct((rows, cols), dtype))(
      a, b, transpose_a=transpose_a, transpose_b=transpose_b)


def product(a: jax.Array, b: jax.Array, transpose_a: bool = False,
            transpose_b: bool = False) -> jax.Array:
  """`a @ b`, either read transposed where it lies (twice as fast for Muon's Gram matrices as a
  transposed copy): two matrices of one dtype, accumulated in float32, without a gradient."""
  _register()
  return _matmul_call(a, b, a.dtype, transpose_a=transpose_a, transpose_b=transpose_b)


@jax.custom_vjp
def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a @ b` of two matrices of one dtype (float32 or bfloat16), accumulated in float32: `product`
  with its gradient (both on oneDNN)."""
  return product(a, b)


def _matmul_forward(a, b):
  return matmul(a, b), (a, b)


def _matmul_backward(residuals, output_gradient):
  a, b = residuals
  output_gradient = output_gradient.astype(a.dtype)
  b_gradient = _matmul_call(a, output_gradient, jnp.float32, transpose_a=True)
  return (_matmul_call(output_gradient, b, a.dtype, transpose_b=True),
          b_gradient.astype(b.dtype))


matmul.defvjp(_matmul_forward, _matmul_backward)


def check_config(cpu: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `config.cpu` whose choices cannot go together."""
  require(cpu.conv_backend in BACKENDS,
          f'config.cpu.conv_backend={cpu.conv_backend!r} is not one of {list(BACKENDS)}')
  require(cpu.speed_path is not False or cpu.conv_backend != 'onednn',
          'config.cpu.conv_backend=onednn is part of the CPU speed path, which '
          'config.cpu.speed_path=False turns off: drop one of the two')

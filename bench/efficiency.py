"""How near this CPU's peak a recipe's training step runs: achieved FLOP/s over the peak.

  python bench/efficiency.py [--config=configs/cnn_fast.py] [--batch_size=1024] [--steps=3]

The peak, two ways, for float32 and bfloat16:
  derived:  cores x clock x FLOPs a core does a cycle, from /proc/cpuinfo's flags: AVX-512 FMA
            (two 512-bit units on Intel's server cores, 64 float32 FLOPs a cycle; Zen 4 runs
            AVX-512 on two 256-bit units, 32), AVX512_BF16 dot products (twice that), AMX
            (TDPBF16PS: 1024 bfloat16 FLOPs a cycle). The clock is cpuinfo's 'cpu MHz' (the
            base clock under a hypervisor; turbo can exceed it).
  measured: the fastest of 4096 x 4096 x 4096 matmuls, on XLA's dot, on the project's oneDNN
            matmul (cifar100_flax/cpu/onednn.py) and, where installed, on PyTorch's, in that
            dtype; the best of them is the peak the figures below are fractions of.
Then the recipe's step at each image side it trains on (XLA's FLOP count of the compiled step
over its fastest time), and each of its convolutions alone, forward and both gradients as a
training step computes them, on oneDNN and on XLA, in the recipe's dtype; and the optimiser's
update alone (Muon's Newton-Schulz iterations are most of it). Lines:

  PEAK dtype=<d> derived=<FLOP/s> measured_xla=<FLOP/s> measured_onednn=<..> measured_torch=<..>
  UPDATE optimiser=<name> seconds=<the fastest update alone>
  STEP side=<s> flops=<per step> seconds=<s> achieved=<FLOP/s> of_peak=<fraction of measured>
  LAYER side=<s> layer=<name> shape=<in -> out, kernel> backend=<b> achieved=<FLOP/s> of_peak=<f>
  CONVOLUTIONS side=<s> backend=<the step's> seconds=<their sum, each timed alone> of_step=<f>

Compare figures only within one run on one machine: a shared machine's speed drifts.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import synthetic

from cifar100_flax import hardware
from cifar100_flax.config import loading
from cifar100_flax.cpu import convolution, onednn, tuning
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.training import flops, states, steps

_MATMUL_SIDE = 4096
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _fastest(run: Callable[[], object], calls: int) -> float:
  jax.block_until_ready(run())  # compiled, caches and thread pools warm
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return min(times)


def flops_per_cycle(dtype: str, vendor: str, cpu: set[str]) -> int:
  """Dense FLOPs one core can do a cycle in `dtype` (multiply and add counted apart)."""
  if 'avx512f' in cpu:
    vector = 32 if vendor == 'AuthenticAMD' else 64  # Zen 4: AVX-512 on 256-bit units
  else:
    vector = 32 if 'fma' in cpu else 8  # AVX2: two 256-bit FMA units
  if dtype == 'bfloat16':
    if 'amx_bf16' in cpu:
      return 1024
    if 'avx512_bf16' in cpu:
      return 2 * vector
  return vector


def derived_peak(dtype: str) -> tuple[float, str]:
  """The peak FLOP/s and how it was derived."""
  cpu = hardware.cpu_info()
  cores = len(os.sched_getaffinity(0))
  mhz = float(cpu['cpu MHz'])
  per_cycle = flops_per_cycle(dtype, cpu['vendor_id'], set(cpu['flags'].split()))
  return cores * mhz * 1e6 * per_cycle, f'{cores} cores x {mhz:.0f} MHz x {per_cycle}'


def measured_peak(dtype: str, calls: int) -> dict[str, float]:
  """FLOP/s of the fastest square matmul on XLA's dot, where built the project's oneDNN one, and
  where installed PyTorch's (its own oneDNN, a newer one); oneDNN's only where it has kernels of
  that dtype for this CPU."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((_MATMUL_SIDE,) * 2), DTYPES[dtype]) for _ in 'ab')
  flop = 2 * _MATMUL_SIDE ** 3
  matmuls = {'xla': jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=a.dtype))}
  if onednn.available() and (dtype == 'float32' or onednn.takes_bfloat16()):
    matmuls['onednn'] = jax.jit(onednn.matmul)
  speeds = {name: flop / _fastest(lambda f=f: f(a, b), calls) for name, f in matmuls.items()}
  torch_seconds = _torch_matmul_seconds(dtype, calls)
  if torch_seconds:
    speeds['torch'] = flop / torch_seconds
  return speeds


# In a process of its own: PyTorch's OpenMP threads may spin on after their work, and must not
# share the cores with what JAX times next.
_TORCH_MATMUL = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
a, b = (torch.randn(int(sys.argv[2]), int(sys.argv[2])).to(getattr(torch, sys.argv[1]))
        for _ in 'ab')
a @ b
times = []
for _ in range(int(sys.argv[4])):
  start = time.perf_counter()
  a @ b
  times.append(time.perf_counter() - start)
print(min(times))
"""


def _torch_matmul_seconds(dtype: str, calls: int) -> float | None:
  """The fastest of PyTorch's matmuls of the same size, or None without PyTorch."""
  done = subprocess.run([sys.executable, '-c', _TORCH_MATMUL, dtype, str(_MATMUL_SIDE),
                         str(len(os.sched_getaffinity(0))), str(calls)],
                        capture_output=True, text=True)
  return float(done.stdout) if done.returncode == 0 else None


def training_sides(config) -> list[int]:
  """Every image side the recipe trains on, in order."""
  return sorted({preprocessing.train_image_size(config, epoch)
                 for epoch in range(config.train.num_epochs)})


def _state_and_batch(config) -> tuple[states.TrainState, dict]:
  batch = jax.device_put(synthetic.batch(config.data.batch_size))
  state, _ = states.create_train_state(config, steps_per_epoch=100, sample_images=batch['image'])
  return state, batch


def update_seconds(config, calls: int) -> float:
  """The fastest optimiser update alone (optax's update and its application to the weights, as
  the step does them), for the recipe's parameters and gradients of their shapes."""
  state, _ = _state_and_batch(config)
  gradients = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), state.params)
  update = jax.jit(lambda g, o, p: optax.apply_updates(p, state.tx.update(g, o, p, value=0.0)[0]))
  return _fastest(lambda: update(gradients, state.opt_state, state.params), calls)


def step_speed(config, side: int, calls: int) -> tuple[float, float]:
  """(XLA's FLOPs of one training step at `side`, counted as the training loop counts them, on
  XLA's own convolutions; the fastest step's seconds)."""
  state, batch = _state_and_batch(config)
  step_flops = flops.flops_per_step(config, state, config.data.batch_size, image_size=side)
  compiled = steps.jit_train_step(config, image_size=side).lower(state, batch).compile()
  holder = {'state': state}

  def run():
    holder['state'], metrics = compiled(holder['state'], batch)
    return metrics
  return step_flops, _fastest(run, calls)


@dataclasses.dataclass(frozen=True)
class Convolution:
  name: str
  input_shape: tuple[int, ...]  # NHWC
  kernel_shape: tuple[int, ...]  # HWIO
  padding: object

  def training_flops(self) -> float:
    """Forward, input gradient and kernel gradient: three times the forward's."""
    n, h, w, _ = self.input_shape
    kh, kw, cin, cout = self.kernel_shape
    return 3 * 2 * n * h * w * kh * kw * cin * cout  # 'SAME': as many outputs as inputs


def convolutions(config, side: int) -> list[Convolution]:
  """The model's nn.Conv layers at `side`-pixel images, as its forward pass meets them."""
  model = states.create_model(config, 'xla')
  images = jnp.zeros((config.data.batch_size, side, side, cifar100.IMAGE_SHAPE[2]), jnp.float32)
  found = []

  def record(call, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Conv) and context.method_name == '__call__':
      x = args[0]
      found.append(Convolution(module.name, tuple(x.shape),
                               (*module.kernel_size, x.shape[-1], module.features),
                               module.padding))
    return call(*args, **kwargs)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
  return found


def layer_speed(conv: Convolution, dtype: str, backend: str, calls: int) -> float:
  """FLOP/s of the convolution's forward pass and both its gradients on `backend`."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(conv.input_shape), DTYPES[dtype])
  kernel = jnp.asarray(rng.standard_normal(conv.kernel_shape) * 0.05, DTYPES[dtype])

  def loss(x, kernel):
    y = convolution.conv_general_dilated(
        x, kernel, (1, 1), conv.padding, use_onednn=backend == 'onednn',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(y.astype(jnp.float32) ** 2)
  gradients = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return conv.training_flops() / _fastest(lambda: gradients(x, kernel), calls)


def print_peaks(calls: int) -> dict[str, float]:
  """Prints the PEAK lines; returns the measured peak of each dtype."""
  peaks = {}
  for name in DTYPES:
    derived, how = derived_peak(name)
    measured = measured_peak(name, calls)
    peaks[name] = max(measured.values())
    print(f'PEAK dtype={name} derived={derived:.3g} ({how}) '
          + ' '.join(f'measured_{k}={v:.3g}' for k, v in measured.items()), flush=True)
  return peaks


def print_side(config, side: int, peak: float, calls: int) -> None:
  """Prints the STEP, LAYER and CONVOLUTIONS lines of `side`-pixel images: the last, the time
  the step's own backend spends in its convolutions, timed alone, and their share of the step."""
  step_flops, seconds = step_speed(config, side, calls)
  print(f'STEP side={side} flops={step_flops:.3g} seconds={seconds:.3f} '
        f'achieved={step_flops / seconds:.3g} of_peak={step_flops / seconds / peak:.3f} '
        f'images_per_s={config.data.batch_size / seconds:.0f}', flush=True)
  used = onednn.resolve(config.cpu.conv_backend)
  in_convolutions = 0.0
  for conv in convolutions(config, side):
    n, h, w, cin = conv.input_shape
    kh, kw, _, cout = conv.kernel_shape
    for backend in ['onednn', 'xla'] if onednn.available() else ['xla']:
      speed = layer_speed(conv, config.model.dtype, backend, calls)
      in_convolutions += conv.training_flops() / speed if backend == used else 0.0
      print(f'LAYER side={side} layer={conv.name} shape={h}x{w}x{cin}->{cout},{kh}x{kw} '
            f'backend={backend} achieved={speed:.3g} of_peak={speed / peak:.3f}', flush=True)
  print(f'CONVOLUTIONS side={side} backend={used} seconds={in_convolutions:.3f} '
        f'of_step={in_convolutions / seconds:.2f}', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/cnn_fast.py', help='the recipe to time')
  parser.add_argument('--batch_size', type=int, default=0, help="images a step (0: the recipe's)")
  parser.add_argument('--steps', type=int, default=3, help='timed calls; the fastest counts')
  args = parser.parse_args()
  tuning.configure_if('auto')  # as main.py: before JAX starts its backend
  config = loading.config_from_file(args.config)
  if args.batch_size:
    config.data.batch_size = args.batch_size
  print(f'jax {jax.__version__}, {len(os.sched_getaffinity(0))} cores, {args.config} '
        f'({config.model.name}, {config.model.dtype}), batch {config.data.batch_size}, '
        f'convolutions on {onednn.resolve(config.cpu.conv_backend)}', flush=True)
  peaks = print_peaks(args.steps)
  print(f'UPDATE optimiser={config.optim.name} seconds={update_seconds(config, args.steps):.3f} '
        f'(the optimiser alone: in every step, whatever its image side)', flush=True)
  for side in training_sides(config):
    print_side(config, side, peaks[config.model.dtype], args.steps)


if __name__ == '__main__':
  main()

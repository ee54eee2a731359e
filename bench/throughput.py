"""Training and inference speed of the project's models in JAX, against the same networks in
PyTorch.

  pip install -r bench/requirements.txt
  python bench/throughput.py [--models=cnn,resnet18] [--batch_size=256] [--rounds=3]

JAX runs the project's own jitted training step (on-device augmentation, label smoothing, SGD with
Nesterov momentum and weight decay; convolutions on oneDNN where config.cpu.conv_backend's 'auto'
picks it, see cifar100_flax/cpu/; Flax's own layers on GPUs and TPUs); PyTorch runs the same network
(bench/torch_peers.py, equal parameter counts) with the same loss and optimiser, channels_last, on
already-augmented floats, in bfloat16 by autocast (AMP), as its users run it; on a GPU in float32
both use TF32 (JAX's default precision; PyTorch with allow_tf32 and cuDNN's benchmark mode). Where
the device's peak is known (GPUs, TPUs), MFU is the step's FLOPs (XLA's count of the compiled JAX
step, the same network for both) per second over that peak.
The machine is shared and noisy, so each round times every (framework, precision) pair in turn and
the fastest round counts. Ratios compare equal precisions; a ratio above 1 means JAX is faster:

  RATIO model=<name> jax_over_torch_fp32=<x> jax_over_torch_bf16=<y>
"""

import functools
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import synthetic
import torch
import torch_peers
from absl import app, flags

from cifar100_flax import hardware
from cifar100_flax.config import loading
from cifar100_flax.cpu import onednn, tuning
from cifar100_flax.data import (
  cifar100,
  preprocessing,
)
from cifar100_flax.models import pretrained
from cifar100_flax.training import flops, states, steps

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'

_MODELS = flags.DEFINE_list('models',
                            ['cnn', 'airbench', 'resnet18', 'resnet50', 'efficientnet_lite0'],
                            'Models to time (also: efficientnet_lite1, efficientnet_lite2).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per training step.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; the fastest counts.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Input side for the EfficientNet-Lites '
                                   '(resized on the device; 0: the recipe\'s 128; 224-260 are '
                                   'their native sizes).')
_CPU_TUNING = flags.DEFINE_enum('cpu_tuning', 'auto', tuning.SETTINGS,
                                'cifar100_flax.cpu.tuning, as main.py applies it (auto: where JAX '
                                'will run on the CPU).')
_RESNET50_IMAGE_SIZE = flags.DEFINE_integer(
    'resnet50_image_size', 0, "ResNet-50's input side (resized on the device; 0: CIFAR's 32, "
    "224: ImageNet's, for accelerators).")
_CONV_BACKEND = flags.DEFINE_enum('conv_backend', 'auto', onednn.BACKENDS,
                                  "JAX's convolutions (config.cpu.conv_backend).")



def _config(name: str) -> ml_collections.ConfigDict:
  return loading.config_from_file(str(_CONFIGS / f'{name}.py'))


def _resnet50_config() -> ml_collections.ConfigDict:
  """ResNet-50 with its ImageNet stem, at --resnet50_image_size (default 32x32, the transfer
  recipe's cheapest size)."""
  config = _config('resnet18')
  config.model.name = 'resnet50'
  config.model.kwargs.stem = 'imagenet'
  config.data.image_size = _RESNET50_IMAGE_SIZE.value
  return config


def _airbench_config() -> ml_collections.ConfigDict:
  """configs/cnn_fast.py's network on Keller Jordan's airbench widths (its own last stage is
  wider), trained by SGD at 32 pixels like the PyTorch peer (the recipe's Muon and its 24-pixel
  epochs would compare another computation)."""
  config = _config('cnn_fast')
  config.model.kwargs = dict(config.model.kwargs, widths=(64, 256, 256))
  config.optim.name = 'sgd'
  config.data.image_size_schedule = ()
  return config


def _efficientnet_lite_config(variant: int) -> ml_collections.ConfigDict:
  """configs/efficientnet_lite0.py's recipe (its frozen early blocks too) for EfficientNet-Lite
  `variant`, at --image_size if given; no weights needed to time it."""
  config = _config('efficientnet_lite0')
  config.model.name = f'efficientnet_lite{variant}'
  config.model.pretrained = ''
  config.data.image_size = _IMAGE_SIZE.value or config.data.image_size
  return config


CONFIGS = {'cnn': functools.partial(_config, 'cnn'), 'airbench': _airbench_config,
           'resnet18': functools.partial(_config, 'resnet18'), 'resnet50': _resnet50_config,
           **{f'efficientnet_lite{v}': functools.partial(_efficientnet_lite_config, v)
              for v in range(3)}}
PEERS = {'cnn': torch_peers.CNN, 'airbench': torch_peers.Airbench,
         'resnet18': functools.partial(torch_peers.ResNet, block='basic', stage_sizes=(2, 2, 2, 2)),
         'resnet50': functools.partial(torch_peers.ResNet, block='bottleneck',
                                       stage_sizes=(3, 4, 6, 3)),
         **{f'efficientnet_lite{v}': functools.partial(torch_peers.efficientnet_lite, v)
            for v in range(3)}}
PRECISIONS = {'fp32': 'float32', 'bf16': 'bfloat16'}


def _seconds(run: Callable[[], None], steps: int) -> float:
  """The fastest of `steps` calls."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return min(times)


class JaxRunner:
  """The project's jitted training and evaluation steps for one config."""

  def __init__(self, config: ml_collections.ConfigDict, batch: dict):
    self.state, _ = states.create_train_state(config, steps_per_epoch=100)
    self.params = sum(x.size for x in jax.tree.leaves(self.state.params))
    self.batch = jax.device_put(batch)
    self.batch_eval = {**self.batch, 'mask': jnp.ones(len(batch['label']), bool)}
    start = time.perf_counter()
    self._train = steps.jit_train_step(config).lower(self.state, self.batch).compile()
    self.flops = flops.compiled_flops(self._train)  # per step; None where XLA does not count
    self._eval = steps.jit_eval_step(config)
    self.train()
    self.infer()
    self.compile_seconds = time.perf_counter() - start

  def train(self) -> None:
    self.state, step_metrics = self._train(self.state, self.batch)
    jax.block_until_ready((self.state, step_metrics))

  def infer(self) -> None:
    jax.block_until_ready(self._eval(self.state, self.batch_eval))


def _freeze(model: torch.nn.Module, name: str, pattern: str) -> None:
  """No gradients for the peer's parameters whose JAX names (through the weights converter)
  config.optim.frozen_params matches; autograd then skips their backward, as XLA does."""
  regex = re.compile(pattern)
  for key, parameter in model.named_parameters():
    converted = pretrained.CONVERTERS[name]({key: parameter.detach().numpy()})
    (path,) = flax.traverse_util.flatten_dict(converted, sep='/')
    parameter.requires_grad = not regex.search(path.split('/', 1)[1])


# The peer runs where JAX does: on the GPU when there is one.
_TORCH_DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
if _TORCH_DEVICE == 'cuda':  # As JAX's default precision multiplies float32 on a GPU: TF32.
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True  # cuDNN's fastest kernels for the (fixed) shapes


class TorchRunner:
  """The PyTorch peer: same network, loss and optimiser; bfloat16 by autocast."""

  def __init__(self, name: str, config: ml_collections.ConfigDict, batch: dict, precision: str):
    self.model = PEERS[name](cifar100.NUM_CLASSES, **config.model.kwargs).to(
        _TORCH_DEVICE, memory_format=torch.channels_last)
    self.params = sum(p.numel() for p in self.model.parameters())
    if config.optim.frozen_params and name in pretrained.CONVERTERS:  # airbench's freezes its own
      _freeze(self.model, name, config.optim.frozen_params)
    optim = config.optim
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=optim.momentum,
                                     nesterov=optim.nesterov, weight_decay=optim.weight_decay)
    self.loss = torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    images = (batch['image'] - np.array(cifar100.MEAN_RGB)) / np.array(cifar100.STDDEV_RGB)
    images = torch.tensor(images.transpose(0, 3, 1, 2), dtype=torch.float32)
    if config.data.image_size:  # JAX resizes inside its step; the peer gets resized images.
      images = torch.nn.functional.interpolate(images, size=config.data.image_size, mode='bilinear')
    self.images = images.to(_TORCH_DEVICE).contiguous(memory_format=torch.channels_last)
    self.labels = torch.tensor(batch['label'], dtype=torch.long, device=_TORCH_DEVICE)
    self.autocast = functools.partial(torch.autocast, _TORCH_DEVICE, dtype=torch.bfloat16,
                                      enabled=precision == 'bf16')
    self.compile_seconds = 0.0

  def train(self) -> None:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast():
      loss = self.loss(self.model(self.images), self.labels)
    loss.backward()
    self.optimizer.step()
    _synchronize()

  def infer(self) -> None:
    self.model.eval()
    with torch.inference_mode(), self.autocast():
      self.model(self.images)
    _synchronize()


def _synchronize() -> None:
  """Waits for the GPU's queued work, which the timings must include."""
  if _TORCH_DEVICE == 'cuda':
    torch.cuda.synchronize()


def time_model(name: str, batch_size: int, steps: int, rounds: int) -> dict:
  """{(framework, precision): {'train': img/s, 'infer': img/s, 'compile': s, 'params': n,
  'mfu': fraction or None}}."""
  batch = synthetic.batch(batch_size)
  runners = {}
  for precision, dtype in PRECISIONS.items():
    config = CONFIGS[name]()
    config.model.dtype = dtype
    config.cpu.conv_backend = _CONV_BACKEND.value
    config.data.batch_size = batch_size
    config.eval.flip_tta, config.eval.translate_tta = False, 0  # One forward pass, like the peer's.
    runners['jax', precision] = JaxRunner(config, batch)
    runners['torch', precision] = TorchRunner(name, config, batch, precision)
  best = {key: {'train': np.inf, 'infer': np.inf} for key in runners}
  for _ in range(rounds):
    for key, runner in runners.items():
      runner.train()  # Warm-up: caches, allocator, thread pools.
      best[key]['train'] = min(best[key]['train'], _seconds(runner.train, steps))
      best[key]['infer'] = min(best[key]['infer'], _seconds(runner.infer, steps))
  results = {}
  for (framework, precision), runner in runners.items():
    flops, peak = runners['jax', precision].flops, hardware.peak_flops_per_device(
        PRECISIONS[precision])
    seconds = best[framework, precision]['train']
    results[framework, precision] = {
        'train': batch_size / seconds, 'infer': batch_size / best[framework, precision]['infer'],
        'compile': runner.compile_seconds, 'params': runner.params,
        'mfu': flops / seconds / (peak * jax.device_count()) if flops and peak else None}
  return results


def time_input(batch_size: int, num_batches: int = 40) -> dict:
  """img/s of the host pipeline (tf.data gather + transfer; where TensorFlow is installed) and
  of the on-device augmentation."""
  speeds = {'on-device augmentation': _augmentation_speed(batch_size)}
  try:
    from cifar100_flax.data import tfds_pipeline
  except ImportError:  # An accelerator image without TensorFlow: the models still time.
    return speeds
  n = cifar100.NUM_TRAIN_EXAMPLES
  rng = np.random.default_rng(0)
  split = cifar100.Split(
      images=rng.integers(0, 256, (n, *cifar100.IMAGE_SHAPE), np.uint8),
      labels=rng.integers(0, 100, n).astype(np.int32), coarse_labels=np.zeros(n, np.int32),
      ids=np.arange(n).astype(str))
  batches = tfds_pipeline.train_batches(split, batch_size, seed=0)
  jax.device_put(next(batches))
  start = time.perf_counter()
  for _ in range(num_batches):
    jax.block_until_ready(jax.device_put(next(batches)))
  return {'host pipeline': num_batches * batch_size / (time.perf_counter() - start), **speeds}


def _augmentation_speed(batch_size: int) -> float:
  config = _config('cnn')
  images = jax.device_put(synthetic.batch(batch_size)['image'])
  augment = jax.jit(functools.partial(preprocessing.preprocess, config=config))
  key = jax.random.key(0)
  jax.block_until_ready(augment(images, key=key))
  return batch_size / _seconds(lambda: jax.block_until_ready(augment(images, key=key)), 5)


def main(argv):
  del argv
  tuning.configure_if(_CPU_TUNING.value)  # Before JAX starts its backend (imports do not).
  torch.set_num_threads(os.cpu_count())
  print(f'jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), '
        f'torch {torch.__version__} ({_TORCH_DEVICE}), {os.cpu_count()} CPUs, '
        f'batch {_BATCH_SIZE.value}, '
        f'JAX convolutions: {onednn.resolve(_CONV_BACKEND.value)}, '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}', flush=True)
  for source, speed in time_input(_BATCH_SIZE.value).items():
    print(f'INPUT {source}: {speed:.0f} img/s', flush=True)
  ratios = []
  for name in _MODELS.value:
    if name not in CONFIGS:
      sys.exit(f'error: --models has {name!r}; choose from {sorted(CONFIGS)}')
    results = time_model(name, _BATCH_SIZE.value, _STEPS.value, _ROUNDS.value)
    for (framework, precision), r in results.items():
      print(f'{name:10s} {framework:6s} {precision}  train {r["train"]:7.1f} img/s  '
            f'infer {r["infer"]:7.1f} img/s  compile {r["compile"]:5.1f} s  '
            f'params {r["params"]:,}' + (f'  MFU {100 * r["mfu"]:.1f}%' if r['mfu'] else ''),
            flush=True)
    ratio = {p: results['jax', p]['train'] / results['torch', p]['train'] for p in PRECISIONS}
    ratios.append(f'RATIO model={name} jax_over_torch_fp32={ratio["fp32"]:.2f} '
                  f'jax_over_torch_bf16={ratio["bf16"]:.2f}')
  print('\n'.join(ratios))


if __name__ == '__main__':
  app.run(main)

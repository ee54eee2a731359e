"""A short training on synthetic data, for an accelerator image without TensorFlow or tfds.

  python bench/gpu_smoke.py [--steps=150] [--batch_size=256]

The project's own jitted training step (on-device augmentation, the smoke config's CNN and the
airbench network, float32 and bfloat16) learns a synthetic task: each of the 100 classes is a
fixed random pattern, each image its class's pattern plus noise. It prints the convolution
backend, the training accuracy at the start and end, and img/s; a `SMOKE ... ok` line per run
whose accuracy rose above 0.9, `SMOKE ... FAILED` otherwise (and the exit code says so).
"""

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from cifar100_flax import configuration, dataset, sharding, steps  # noqa: E402
from cifar100_flax.cpu import onednn  # noqa: E402

_STEPS = flags.DEFINE_integer('steps', 150, 'Training steps per run.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per step.')
_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs')


def _task(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The 100 class templates [100, 32, 32, 3] (values 0-255) and the generator of the noise."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (dataset.NUM_CLASSES, *dataset.IMAGE_SHAPE)), rng


def _batch(templates: np.ndarray, rng: np.random.Generator, size: int) -> dict:
  labels = rng.integers(0, dataset.NUM_CLASSES, size)
  noise = rng.normal(0, 40, (size, *dataset.IMAGE_SHAPE))
  images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
  return {'image': images, 'label': labels.astype(np.int32), 'flip': rng.random(size) < 0.5}


def smoke(config_name: str, dtype: str, batch_size: int, num_steps: int) -> bool:
  config = configuration.config_from_file(os.path.join(_CONFIGS, f'{config_name}.py'))
  config.dtype, config.batch_size = dtype, batch_size
  config.augment.crop_padding = 2  # the task survives small shifts; flips are in the batch
  config.num_epochs, config.warmup_epochs = 1, 0.1
  templates, rng = _task()
  mesh = sharding.create_mesh()
  state, _ = steps.create_train_state(config, steps_per_epoch=num_steps,
                                      sample_images=_batch(templates, rng, 512)['image'])
  state = sharding.replicate(state, mesh)
  train_step = steps.jit_train_step(config, mesh)
  accuracies, start = [], None
  for step in range(num_steps):
    batch = sharding.shard_batch(_batch(templates, rng, batch_size), mesh)
    state, metrics = train_step(state, batch)
    if step == 0:
      jax.block_until_ready(state)
      start = time.perf_counter()  # after compilation
    if step < 5 or step >= num_steps - 5:
      accuracies.append(float(metrics.compute()['accuracy']))
  jax.block_until_ready(state)
  speed = (num_steps - 1) * batch_size / (time.perf_counter() - start)
  first, last = np.mean(accuracies[:5]), np.mean(accuracies[-5:])
  passed = last > 0.9
  print(f'SMOKE {config_name} {dtype}: backend {jax.default_backend()}, '
        f'{onednn.resolve(config.conv_backend)} convolutions, accuracy {first:.3f} -> {last:.3f}, '
        f'{speed:.0f} img/s {"ok" if passed else "FAILED"}', flush=True)
  return passed


def main(argv):
  del argv
  results = [smoke(name, dtype, _BATCH_SIZE.value, _STEPS.value)
             for name in ('smoke', 'cnn_fast') for dtype in ('float32', 'bfloat16')]
  sys.exit(0 if all(results) else 1)


if __name__ == '__main__':
  app.run(main)

"""Synthetic CIFAR-100-shaped data, made in host memory without TensorFlow
(`config.data.name='synthetic'`).

For timing the real training loop on hardware (images/s, step time, MFU) and for machines that
have neither TensorFlow nor the dataset, such as accelerator images: the splits have CIFAR-100's
sizes, shapes and label sets, and each image is its class's fixed random pattern blended with
noise, so that a model learns and the logged accuracy moves. Its accuracies say nothing about
CIFAR-100. The same interface as tfds_pipeline.py: `load_splits` and `train_batches`.
"""

from collections.abc import Iterator

import ml_collections
import numpy as np

from cifar100_flax.data import cifar100
from cifar100_flax.data.cifar100 import Split


def _split(rng: np.random.Generator, patterns: np.ndarray, size: int, name: str) -> Split:
  labels = rng.integers(0, cifar100.NUM_CLASSES, size, dtype=np.int32)
  noise = rng.integers(0, 256, (size, *cifar100.IMAGE_SHAPE), dtype=np.uint8)
  # In uint8 throughout (150 MB, not 1.2 GB of floats); a quarter noise.
  images = patterns[labels] // 4 * 3 + noise // 4
  return Split(images=images, labels=labels, coarse_labels=cifar100.FINE_TO_COARSE[labels],
               ids=np.array([f'{name}_{i:05d}' for i in range(size)]))


def load_splits(config: ml_collections.ConfigDict, with_train: bool = True) -> dict[str, Split]:
  """'train' and 'validation' (config.data.validation_size of cifar100.train_examples: CIFAR-100's
  50,000 or config.data.synthetic_size) and 'test' (a fifth as many), the same for the same
  config.data.split_seed."""
  rng = np.random.default_rng(config.data.split_seed)
  patterns = rng.integers(0, 256, (cifar100.NUM_CLASSES, *cifar100.IMAGE_SHAPE), dtype=np.uint8)
  size = cifar100.train_examples(config.data)
  splits = {'test': _split(rng, patterns, size // 5, 'test')}
  if with_train:
    validation_size = max(config.data.validation_size, 0)
    splits['validation'] = _split(rng, patterns, validation_size, 'validation')
    splits['train'] = _split(rng, patterns, size - validation_size, 'train')
  return splits


def train_batches(split: Split, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """tfds_pipeline.train_batches' batches (a pure function of seed and step, this process's
  slice of each, alternating flips, the teachers' targets), gathered with numpy."""
  n, local = len(split), batch_size // process_count
  epoch, skip = divmod(start_step, cifar100.steps_per_epoch(n, batch_size))
  first_flip = np.random.default_rng([seed, 2**32 - 1]).random(n) < 0.5
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(skip * batch_size, n - batch_size + 1, batch_size):
      index = order[start:start + batch_size][process_index * local:(process_index + 1) * local]
      batch = {'image': split.images[index], 'label': split.labels[index],
               'flip': first_flip[index] ^ (epoch % 2 == 1)}
      yield batch if split.teacher is None else {**batch, 'teacher': split.teacher[index]}
    epoch, skip = epoch + 1, 0

"""The benches' batch: random CIFAR-shaped images, labels and flips, the same for every run."""

import numpy as np

from cifar100_flax.data import cifar100


def batch(batch_size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (batch_size, *cifar100.IMAGE_SHAPE), np.uint8),
          'label': rng.integers(0, cifar100.NUM_CLASSES, batch_size).astype(np.int32),
          'flip': rng.random(batch_size) < 0.5}

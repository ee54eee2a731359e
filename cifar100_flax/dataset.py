"""What CIFAR-100 is, without TensorFlow: sizes, normalisations, a split held in host memory and
its evaluation batches.

The steps, the models and whatever applies a trained model to images need these; only reading
the dataset needs TensorFlow, and only input_pipeline.py imports it.
"""

import dataclasses
from typing import Iterator

import numpy as np

NUM_CLASSES = 100
NUM_COARSE_CLASSES = 20
IMAGE_SHAPE = (32, 32, 3)
NUM_TRAIN_EXAMPLES = 50_000  # tfds 'train', before the validation carve-out
# Per-channel statistics of the 50,000 CIFAR-100 training images, in the uint8 scale.
MEAN_RGB = (0.50707516 * 255, 0.48654887 * 255, 0.44091784 * 255)
STDDEV_RGB = (0.26733429 * 255, 0.25643846 * 255, 0.27615047 * 255)
# config.normalisation -> (mean, stddev): CIFAR-100's own, or what pretrained weights expect
# (torchvision/timm ResNets: ImageNet's statistics; EfficientNet-Lite: [-1, 1]).
NORMALISATIONS = {
    'cifar100': (MEAN_RGB, STDDEV_RGB),
    'imagenet': ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    'unit': ((127.5,) * 3, (127.5,) * 3),
}


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in host memory."""
  images: np.ndarray  # uint8 [N, 32, 32, 3]
  labels: np.ndarray  # int32 [N], fine labels 0..99
  coarse_labels: np.ndarray  # int32 [N], superclasses 0..19
  ids: np.ndarray  # str [N], tfds example ids such as 'test_00042'

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, index: np.ndarray) -> 'Split':
    return Split(self.images[index], self.labels[index], self.coarse_labels[index], self.ids[index])


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """Every example exactly once, in order; the last batch is zero-padded and `mask` marks real
  rows."""
  local = batch_size // process_count
  for start in range(0, len(split), batch_size):
    index = np.arange(start, start + batch_size)[process_index * local:(process_index + 1) * local]
    mask = index < len(split)
    index = np.where(mask, index, 0)
    yield {'image': np.where(mask[:, None, None, None], split.images[index], 0).astype(np.uint8),
           'label': np.where(mask, split.labels[index], 0), 'mask': mask}

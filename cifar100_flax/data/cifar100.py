"""What CIFAR-100 is, without TensorFlow: sizes, normalisations, a split held in host memory and
its evaluation batches; and where config.data.name's data comes from.

The steps, the models and whatever applies a trained model to images need these; only reading
the dataset needs TensorFlow, and only tfds_pipeline.py imports it.
"""

import dataclasses
import importlib
from collections.abc import Iterator
from types import ModuleType

import ml_collections
import numpy as np

from cifar100_flax.errors import require, require_non_negative

NUM_CLASSES = 100
NUM_COARSE_CLASSES = 20
IMAGE_SHAPE = (32, 32, 3)
NUM_TRAIN_EXAMPLES = 50_000  # tfds 'train', before the validation carve-out
NUM_TEST_EXAMPLES = 10_000
# CIFAR's images are 32 px; past this side a training batch no longer fits in memory (128 images
# at 1024 px are 1.6 GB of float32 before the first layer).
MAX_IMAGE_SIZE = 1024
SOURCES = ('cifar100', 'synthetic')  # config.data.name
# tfds' label names (label.labels.txt, coarse_label.labels.txt), in label order: what a trained
# model's outputs mean, known without the dataset.
CLASS_NAMES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle',
    'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
    'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup',
    'dinosaur', 'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house',
    'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man',
    'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid',
    'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy',
    'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal',
    'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider', 'squirrel', 'streetcar',
    'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger', 'tractor',
    'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman',
    'worm',
)
COARSE_CLASS_NAMES = (
    'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
    'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates', 'people',
    'reptiles', 'small_mammals', 'trees', 'vehicles_1', 'vehicles_2',
)
# CIFAR-100 superclass of each fine label, in tfds label order; read off the training split.
FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15,
    3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4,
    2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13], dtype=np.int32)
# Per-channel statistics of the 50,000 CIFAR-100 training images, in the uint8 scale.
MEAN_RGB = (0.50707516 * 255, 0.48654887 * 255, 0.44091784 * 255)
STDDEV_RGB = (0.26733429 * 255, 0.25643846 * 255, 0.27615047 * 255)
# config.data.normalisation -> (mean, stddev): CIFAR-100's own, or what pretrained weights expect
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
  # float32 [N, classes]: the teachers' soft targets of each image, where the run distils
  # (training/distillation.py); its training batches then carry them as 'teacher'.
  teacher: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, index: np.ndarray) -> 'Split':
    return Split(self.images[index], self.labels[index], self.coarse_labels[index], self.ids[index],
                 None if self.teacher is None else self.teacher[index])


def source(config: ml_collections.ConfigDict) -> ModuleType:
  """The module that loads config.data.name (`load_splits`, `train_batches`): synthetic.py for
  'synthetic', else tfds_pipeline.py. Imported only once chosen, so that synthetic data never
  imports TensorFlow."""
  name = 'synthetic' if config.data.name == 'synthetic' else 'tfds_pipeline'
  return importlib.import_module(f'cifar100_flax.data.{name}')


def train_examples(data: ml_collections.ConfigDict) -> int:
  """The training split's size before the validation carve-out (`data`: config.data):
  CIFAR-100's, or data.synthetic_size for synthetic data."""
  if data.name == 'synthetic' and data.synthetic_size:
    return data.synthetic_size
  return NUM_TRAIN_EXAMPLES


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches an epoch (the last partial one is dropped)."""
  return num_examples // batch_size


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


def check_image_size(key: str, size: int) -> None:
  """A side images are resized to (config `key`): 0 (CIFAR's own) up to MAX_IMAGE_SIZE."""
  require(size >= 0, f'config.{key} must be >= 0, got {size}')
  require(size <= MAX_IMAGE_SIZE, f'config.{key} must be at most {MAX_IMAGE_SIZE} (CIFAR images '
          f'are 32 px; larger batches no longer fit in memory), got {size}')


def _check_image_size_schedule(schedule: tuple) -> None:
  example = 'e.g. ((0, 24), (8, 32))'
  for pair in schedule:
    require(isinstance(pair, (tuple, list)) and len(pair) == 2
            and isinstance(pair[0], (int, float)) and pair[0] >= 0
            and isinstance(pair[1], int) and 0 < pair[1] <= MAX_IMAGE_SIZE,
            f'config.data.image_size_schedule must hold (start epoch >= 0, side in [1, '
            f'{MAX_IMAGE_SIZE}]) pairs, {example}; got {pair!r}')
  starts = [start for start, _ in schedule]
  require(starts == sorted(set(starts)), f'config.data.image_size_schedule: the start epochs must '
          f'increase, {example}; got {starts}')


def check_config(data: ml_collections.ConfigDict, devices: int) -> None:
  """Raises ConfigError for a `config.data` value that cannot work on `devices` devices."""
  require(data.name in SOURCES,
          f'config.data.name={data.name!r} is unknown; choose one of {list(SOURCES)}')
  require(data.synthetic_size >= 0,
          f"config.data.synthetic_size must be >= 0 (0: CIFAR-100's), got {data.synthetic_size}")
  require(data.batch_size > 0, f'config.data.batch_size must be > 0, got {data.batch_size}')
  require(data.batch_size % devices == 0, f'config.data.batch_size={data.batch_size} must be '
          f'divisible by the number of devices ({devices})')
  examples = train_examples(data)
  require(data.batch_size <= examples - max(data.validation_size, 0),
          f'config.data.batch_size={data.batch_size} is more than the '
          f'{examples - max(data.validation_size, 0):,} training images (after '
          f'config.data.validation_size={data.validation_size})')
  largest_validation = examples - data.batch_size
  require(0 <= data.validation_size < largest_validation, f'config.data.validation_size must be '
          f'in [0, {largest_validation}), got {data.validation_size}')
  require(data.normalisation in NORMALISATIONS, f'config.data.normalisation='
          f'{data.normalisation!r} is unknown; choose one of {sorted(NORMALISATIONS)}')
  require_non_negative(data, 'config.data', ('split_seed', 'shuffle_seed'))
  check_image_size('data.image_size', data.image_size)
  _check_image_size_schedule(data.image_size_schedule)

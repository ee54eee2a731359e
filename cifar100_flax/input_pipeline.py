"""CIFAR-100 from tensorflow-datasets: seeded train/validation split, test split, host batching.

CIFAR-100 is 180 MB as uint8, so each split is loaded into host memory once and batches are
gathered from it: shuffling is then a permutation per epoch, which makes the order of batches a
pure function of (seed, step) and lets an interrupted run resume at exactly the batch it stopped at.
"""

import dataclasses
import os
import socket
import sys
from typing import Iterator, Optional

import ml_collections
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cifar100_flax.errors import DataError

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
# Where tfds downloads CIFAR-100 from; probed first because tfds retries for minutes when offline.
_DOWNLOAD_HOST = ('www.cs.toronto.edu', 443)


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


def _why_offline() -> Optional[str]:
  """None if the download host answers, else the reason it does not."""
  try:
    socket.create_connection(_DOWNLOAD_HOST, timeout=5).close()
    return None
  except OSError as e:
    return str(e)


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  data_dir = config.data_dir or os.environ.get('TFDS_DATA_DIR')
  builder = tfds.builder(config.dataset, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  where = builder.data_dir
  offline = _why_offline()
  if offline:
    raise DataError(
        f'{config.dataset} is not prepared in {where} and cannot be downloaded ({offline}). '
        f'Prepare it once on a machine with internet (`python -c "import tensorflow_datasets as '
        f"tfds; tfds.builder('{config.dataset}').download_and_prepare()\"`), copy the "
        f'tensorflow_datasets folder here, and point to it with --config.data_dir=DIR or '
        f'TFDS_DATA_DIR=DIR.')
  logging.info('Downloading %s into %s', config.dataset, where)
  builder.download_and_prepare()
  return builder


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  return _builder(config).info.features['label'].names


def coarse_class_names(config: ml_collections.ConfigDict) -> list[str]:
  return _builder(config).info.features['coarse_label'].names


def _load_split(builder: tfds.core.DatasetBuilder, split: str) -> Split:
  # Chunks rather than batch_size=-1, which needs a known cardinality (mock data has none).
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
  data = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
  return Split(images=data['image'], labels=data['label'].astype(np.int32),
               coarse_labels=data['coarse_label'].astype(np.int32),
               ids=data['id'].astype(str))


def load_splits(config: ml_collections.ConfigDict, with_train: bool = True) -> dict[str, Split]:
  """'train' and 'validation' (a seeded carve-out of tfds 'train') and 'test'."""
  builder = _builder(config)
  splits = {'test': _load_split(builder, 'test')}
  if with_train:
    full_train = _load_split(builder, 'train')
    order = np.random.default_rng(config.split_seed).permutation(len(full_train))
    splits['validation'] = full_train.take(np.sort(order[:config.validation_size]))
    splits['train'] = full_train.take(np.sort(order[config.validation_size:]))
  return splits


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return num_examples // batch_size


def train_batches(split: Split, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Endless uint8 batches, reshuffled each epoch; batch k is the same whatever `start_step`.

  Each process gets its own slice of the global batch. The last partial batch of an epoch is
  dropped; which images that drops changes from epoch to epoch. 'flip' is airbench's alternating
  flip: each image is mirrored in every other epoch, starting at random.
  """
  n = len(split)
  per_epoch = steps_per_epoch(n, batch_size)
  start_epoch, skip = divmod(start_step, per_epoch)
  local = batch_size // process_count
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  first_flip = tf.random.stateless_uniform([n], seed=[seed, -1]) < 0.5

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
    return batches.map(lambda index: (index, epoch % 2 == 1))

  def gather(index, odd_epoch):
    index = index[process_index * local:(process_index + 1) * local]
    return {'image': tf.gather(images, index), 'label': tf.gather(labels, index),
            'flip': tf.math.logical_xor(tf.gather(first_flip, index), odd_epoch)}

  ds = tf.data.Dataset.range(start_epoch, sys.maxsize).flat_map(epoch_batches).skip(skip)
  ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """Every example exactly once, in order; the last batch is zero-padded and `mask` marks real rows."""
  local = batch_size // process_count
  for start in range(0, len(split), batch_size):
    index = np.arange(start, start + batch_size)[process_index * local:(process_index + 1) * local]
    mask = index < len(split)
    index = np.where(mask, index, 0)
    yield {'image': np.where(mask[:, None, None, None], split.images[index], 0).astype(np.uint8),
           'label': np.where(mask, split.labels[index], 0), 'mask': mask}

"""CIFAR-100 from tensorflow-datasets: seeded train/validation split, test split, host batching.

CIFAR-100 is 180 MB as uint8, so each split is loaded into host memory once and batches are
gathered from it: shuffling is then a permutation per epoch, which makes the order of batches a
pure function of (seed, step) and lets an interrupted run resume at exactly the batch it stopped at.
"""

import os
import pathlib
import socket
import sys
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from cifar100_flax.data.cifar100 import Split, steps_per_epoch
from cifar100_flax.errors import DataError

# TensorFlow only feeds data; keep it off any GPU so that JAX has the memory.
tf.config.set_visible_devices([], 'GPU')

# Where tfds downloads CIFAR-100 from; probed first because tfds retries for minutes when offline.
_DOWNLOAD_HOST = ('www.cs.toronto.edu', 443)


def _why_offline() -> str | None:
  """None if the download host answers, else the reason it does not."""
  try:
    socket.create_connection(_DOWNLOAD_HOST, timeout=5).close()
    return None
  except OSError as e:
    return str(e)


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  data_dir = config.data.dir or os.environ.get('TFDS_DATA_DIR')
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f'the data dir {data_dir} is a file, not a folder: point --config.data.dir '
                    f'(or TFDS_DATA_DIR) to the tensorflow_datasets folder')
  try:
    builder = tfds.builder(config.data.name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except (tf.errors.OpError, OSError) as e:  # e.g. a folder without permission
    raise DataError(f'cannot read the data dir {data_dir}: {_tf_message(e)}. Make it readable, '
                    f'or point --config.data.dir to another') from e
  if prepared:
    return builder
  where = builder.data_dir
  locked = _locked_folder(pathlib.Path(where).absolute(), data_dir)
  if locked:
    raise DataError(f'permission denied: {locked} cannot be read, so {config.data.name} in {where} '
                    f'cannot be found. Make it readable, or point --config.data.dir to another')
  offline = _why_offline()
  if offline:
    raise DataError(
        f'{config.data.name} is not prepared in {where} and cannot be downloaded ({offline}). '
        f'Prepare it once on a machine with internet (`python -c "import tensorflow_datasets as '
        f"tfds; tfds.builder('{config.data.name}').download_and_prepare()\"`), copy the "
        f'tensorflow_datasets folder here, and point to it with --config.data.dir=DIR, or '
        f'with TFDS_DATA_DIR=DIR (which wins over the dir a run\'s config.json records, not over '
        f'one --config names).')
  logging.info('Downloading %s into %s', config.data.name, where)
  builder.download_and_prepare()
  return builder


def _locked_folder(where: pathlib.Path, data_dir: str | None) -> pathlib.Path | None:
  """The outermost folder on the way to `where` this process may not enter (or, from `data_dir`
  on, list): tfds reads such a dataset as one never prepared."""
  inside = pathlib.Path(data_dir).absolute() if data_dir else where
  for folder in reversed([where, *where.parents]):
    if not folder.exists():
      return None
    needs = os.R_OK | os.X_OK if folder == inside or inside in folder.parents else os.X_OK
    if not os.access(folder, needs):
      return folder
  return None


def _tf_message(error: BaseException) -> str:
  text = getattr(error, 'message', None) or str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def expected_examples(builder: tfds.core.DatasetBuilder, split: str) -> int | None:
  """How many examples tfds recorded for `split` when it prepared the dataset."""
  return builder.info.splits[split].num_examples


def _damaged(builder: tfds.core.DatasetBuilder, split: str, why: str) -> DataError:
  return DataError(
      f'the {split} split of {builder.data_dir} is damaged ({why}). Delete that folder and '
      f'prepare it again (the first run downloads it; or copy a good one there).')


def _load_split(builder: tfds.core.DatasetBuilder, split: str) -> Split:
  # Chunks rather than batch_size=-1, which needs a known cardinality (mock data has none).
  try:
    chunks = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
  except (tf.errors.OpError, OSError, ValueError) as e:  # a truncated, corrupt or missing shard
    raise _damaged(builder, split, _tf_message(e)) from e
  if not chunks:
    raise _damaged(builder, split, 'it has no examples')
  data = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
  expected = expected_examples(builder, split)
  if expected is not None and len(data['label']) != expected:
    raise _damaged(builder, split, f'it holds {len(data["label"])} of the {expected} examples '
                                   f'tfds recorded')
  return Split(images=data['image'], labels=data['label'].astype(np.int32),
               coarse_labels=data['coarse_label'].astype(np.int32),
               ids=data['id'].astype(str))


def load_splits(config: ml_collections.ConfigDict, with_train: bool = True) -> dict[str, Split]:
  """'train' and 'validation' (a seeded carve-out of tfds 'train') and 'test'."""
  builder = _builder(config)
  splits = {'test': _load_split(builder, 'test')}
  if with_train:
    full_train = _load_split(builder, 'train')
    order = np.random.default_rng(config.data.split_seed).permutation(len(full_train))
    splits['validation'] = full_train.take(np.sort(order[:config.data.validation_size]))
    splits['train'] = full_train.take(np.sort(order[config.data.validation_size:]))
  return splits


def train_batches(split: Split, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Endless uint8 batches, reshuffled each epoch; batch k is the same whatever `start_step`.

  Each process gets its own slice of the global batch. The last partial batch of an epoch is
  dropped; which images that drops changes from epoch to epoch. 'flip' is airbench's alternating
  flip: each image is mirrored in every other epoch, starting at random; 'teacher' holds the
  split's soft targets where it has them.
  """
  n = len(split)
  per_epoch = steps_per_epoch(n, batch_size)
  start_epoch, skip = divmod(start_step, per_epoch)
  local = batch_size // process_count
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  teacher = None if split.teacher is None else tf.constant(split.teacher)
  first_flip = tf.random.stateless_uniform([n], seed=[seed, -1]) < 0.5

  def epoch_batches(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
    return batches.map(lambda index: (index, epoch % 2 == 1))

  def gather(index, odd_epoch):
    index = index[process_index * local:(process_index + 1) * local]
    batch = {'image': tf.gather(images, index), 'label': tf.gather(labels, index),
             'flip': tf.math.logical_xor(tf.gather(first_flip, index), odd_epoch)}
    return batch if teacher is None else {**batch, 'teacher': tf.gather(teacher, index)}

  ds = tf.data.Dataset.range(start_epoch, sys.maxsize).flat_map(epoch_batches).skip(skip)
  ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()

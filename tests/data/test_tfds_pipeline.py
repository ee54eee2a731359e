import itertools

import numpy as np
import pytest

from cifar100_flax.data import tfds_pipeline
from cifar100_flax.errors import DataError
from tests.helpers import MOCK_EXAMPLES, tiny_config


def test_split_sizes_and_dtypes(mock_cifar):
  splits = tfds_pipeline.load_splits(tiny_config(validation_size=40))
  assert {k: len(v) for k, v in splits.items()} == {
      'train': MOCK_EXAMPLES - 40, 'validation': 40, 'test': MOCK_EXAMPLES}
  for split in splits.values():
    assert split.images.shape[1:] == (32, 32, 3) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and split.labels.max() < 100
  assert not set(splits['train'].ids) & set(splits['validation'].ids)


def test_validation_split_follows_its_seed(mock_cifar):
  ids = lambda seed: set(tfds_pipeline.load_splits(tiny_config(split_seed=seed))['validation'].ids)
  assert ids(0) == ids(0)
  assert ids(0) != ids(1)


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_train_batches_resume_at_any_step(mock_cifar):
  split = tfds_pipeline.load_splits(tiny_config())['train']  # 160 images: 10 batches of 16
  full = _take(tfds_pipeline.train_batches(split, 16, seed=3), 25)
  resumed = _take(tfds_pipeline.train_batches(split, 16, seed=3, start_step=13), 12)
  for a, b in zip(full[13:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_array_equal(a['flip'], b['flip'])
  assert full[0]['image'].shape == (16, 32, 32, 3) and full[0]['image'].dtype == np.uint8
  # Each epoch is a permutation of the split, and epochs differ in order.
  epoch = lambda k: np.concatenate([b['image'] for b in full[10 * k:10 * k + 10]])
  as_rows = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))
  assert as_rows(epoch(0)) == as_rows(split.images) == as_rows(epoch(1))
  assert not np.array_equal(epoch(0), epoch(1))


def test_alternating_flip_mirrors_each_image_in_every_other_epoch(mock_cifar):
  split = tfds_pipeline.load_splits(tiny_config())['train']  # 160 images: 10 batches of 16
  batches = _take(tfds_pipeline.train_batches(split, 16, seed=3), 30)

  def flips_of(epoch):  # image bytes -> flipped?
    chunk = batches[10 * epoch:10 * epoch + 10]
    return {bytes(i): f for b in chunk for i, f in zip(b['image'], b['flip'])}

  first, second, third = (flips_of(k) for k in range(3))
  assert len(first) == len(split)  # the mock's images are distinct
  assert all(second[k] != first[k] and third[k] == first[k] for k in first)
  assert 0.3 < np.mean(list(first.values())) < 0.7


def test_each_process_gets_its_part_of_the_batch(mock_cifar):
  split = tfds_pipeline.load_splits(tiny_config())['train']
  whole = next(tfds_pipeline.train_batches(split, 16, seed=0))
  parts = [next(tfds_pipeline.train_batches(split, 16, 0, 0, p, 2)) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), whole['label'])


def test_missing_data_offline_fails_fast_and_says_how_to_fix(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_pipeline, '_why_offline', lambda: 'no network')
  with pytest.raises(DataError, match='cifar100 is not prepared.*TFDS_DATA_DIR'):
    tfds_pipeline.load_splits(tiny_config(data_dir=str(tmp_path)))

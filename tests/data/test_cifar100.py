import os
import pathlib

import numpy as np
import pytest

from cifar100_flax.data import cifar100


def test_eval_batches_cover_every_example_once():
  split = cifar100.Split(
      images=np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8),
      labels=np.arange(10, dtype=np.int32), coarse_labels=np.zeros(10, np.int32),
      ids=np.array([str(i) for i in range(10)]))
  batches = list(cifar100.eval_batches(split, 4))
  assert [len(b['label']) for b in batches] == [4, 4, 4]
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 10
  np.testing.assert_array_equal(labels[mask], np.arange(10))
  assert (batches[-1]['image'][2:] == 0).all()


# Where tfds reads the prepared dataset: $TFDS_DATA_DIR, else its default (.ci/run sets the former
# where the machine has the data).
_DATA_DIR = os.environ.get('TFDS_DATA_DIR', pathlib.Path.home() / 'tensorflow_datasets')
_PREPARED = pathlib.Path(_DATA_DIR) / 'cifar100' / '3.0.2'


@pytest.mark.skipif(not (_PREPARED / 'label.labels.txt').is_file(),
                    reason=f'needs the prepared tfds cifar100 in {_PREPARED} ($TFDS_DATA_DIR)')
def test_class_names_are_those_of_the_prepared_dataset():
  assert cifar100.CLASS_NAMES == tuple((_PREPARED / 'label.labels.txt').read_text().split())
  assert cifar100.COARSE_CLASS_NAMES == tuple(
      (_PREPARED / 'coarse_label.labels.txt').read_text().split())


def test_superclasses_follow_cifar100s_published_grouping():
  assert len(cifar100.CLASS_NAMES) == cifar100.NUM_CLASSES
  names = dict(zip(cifar100.CLASS_NAMES, cifar100.FINE_TO_COARSE))
  assert cifar100.COARSE_CLASS_NAMES[names['maple_tree']] == 'trees'
  assert cifar100.COARSE_CLASS_NAMES[names['rocket']] == 'vehicles_2'
  assert cifar100.COARSE_CLASS_NAMES[names['beaver']] == 'aquatic_mammals'

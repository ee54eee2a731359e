"""The battery's fixtures: a small CIFAR-100 that tensorflow-datasets prepares from fake binary
files (as it prepares the real download), and a tiny run trained and evaluated on it by main.py.

Every case is marked `faults`; `python -m pytest -m faults` runs them (README, Tests).
"""

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cifar100_flax.data import cifar100
from tests.faults import battery

TRAIN_IMAGES, TEST_IMAGES = 200, 100


def pytest_collection_modifyitems(items):
  here = pathlib.Path(__file__).parent
  for item in items:
    if here in pathlib.Path(item.fspath).parents:
      item.add_marker(pytest.mark.faults)


def _write_binary(path: pathlib.Path, count: int, rng: np.random.Generator) -> None:
  """CIFAR-100's binary format: per image a coarse label, a fine label and 3072 bytes (CHW)."""
  fine = rng.integers(0, cifar100.NUM_CLASSES, count)
  records = np.concatenate([cifar100.FINE_TO_COARSE[fine][:, None], fine[:, None],
                            rng.integers(0, 256, (count, 3072))], axis=1)
  path.write_bytes(records.astype(np.uint8).tobytes())


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> pathlib.Path:
  """A tfds data_dir holding a prepared `cifar100` of 200 training and 100 test images."""
  root = tmp_path_factory.mktemp('download')
  extracted = root / 'cifar-100-binary'
  extracted.mkdir()
  rng = np.random.default_rng(0)
  _write_binary(extracted / 'train.bin', TRAIN_IMAGES, rng)
  _write_binary(extracted / 'test.bin', TEST_IMAGES, rng)
  (extracted / 'fine_label_names.txt').write_text('\n'.join(cifar100.CLASS_NAMES))
  (extracted / 'coarse_label_names.txt').write_text('\n'.join(cifar100.COARSE_CLASS_NAMES))
  data = tmp_path_factory.mktemp('tensorflow_datasets')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds.download.DownloadManager, 'download_and_extract', lambda self, url: root)
    tfds.builder('cifar100', data_dir=str(data)).download_and_prepare()
  return data


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """A tiny run trained (20 steps, a checkpoint every 5) and evaluated by main.py; copy it
  (battery.copy_run) before changing anything."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  battery.assert_success(battery.main_py(*battery.TINY, f'--workdir={workdir}',
                                         f'--config.data.dir={data_dir}'))
  battery.assert_success(battery.main_py('--mode=eval', f'--workdir={workdir}'))
  return workdir


@pytest.fixture(scope='session')
def reported_run(tmp_path_factory, trained_run) -> pathlib.Path:
  """trained_run with its report."""
  workdir = battery.copy_run(trained_run, tmp_path_factory.mktemp('reported') / 'run')
  battery.assert_success(battery.main_py('--mode=report', f'--workdir={workdir}'))
  return workdir


@pytest.fixture
def run(tmp_path, trained_run) -> pathlib.Path:
  """A copy of trained_run this case may damage."""
  return battery.copy_run(trained_run, tmp_path / 'run')


@pytest.fixture
def damaged_data(tmp_path, data_dir) -> pathlib.Path:
  """A copy of data_dir this case may damage."""
  return pathlib.Path(shutil.copytree(data_dir, tmp_path / 'data'))

"""A dataset that is missing, damaged or unreadable: the project's one-line data error, naming the
folder and how to prepare it again, never TensorFlow's traceback."""

import os
import pathlib
import shutil

import pytest

from tests.faults.battery import TINY, assert_user_error, main_py

SHARDS = 'cifar100/3.0.2'


def _train(tmp_path, data, fault=None, prefix=()):
  return main_py(*TINY, f'--workdir={tmp_path / "run"}', f'--config.data.dir={data}',
                 fault=fault, prefix=prefix)


def _shard(data: pathlib.Path, split: str) -> pathlib.Path:
  (shard,) = (data / SHARDS).glob(f'cifar100-{split}.tfrecord-*')
  return shard


def test_an_empty_data_dir_offline(tmp_path):
  data = tmp_path / 'empty'
  data.mkdir()
  assert_user_error(_train(tmp_path, data, fault='offline'), 'not prepared', str(data),
                    'TFDS_DATA_DIR')


def test_a_data_dir_that_is_a_file(tmp_path):
  data = tmp_path / 'file'
  data.write_text('')
  assert_user_error(_train(tmp_path, data, fault='offline'), str(data))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_a_truncated_shard(tmp_path, damaged_data, split):  # issue 25, 14
  shard = _shard(damaged_data, split)
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  assert_user_error(_train(tmp_path, damaged_data), 'damaged', str(damaged_data / SHARDS),
                    'prepare')


def test_a_corrupted_shard(tmp_path, damaged_data):  # issue 25, 14
  shard = _shard(damaged_data, 'train')
  data = bytearray(shard.read_bytes())
  data[1000:1100] = os.urandom(100)
  shard.write_bytes(bytes(data))
  assert_user_error(_train(tmp_path, damaged_data), 'damaged', 'prepare')


def test_a_missing_shard(tmp_path, damaged_data):  # issue 25, 14
  _shard(damaged_data, 'test').unlink()
  assert_user_error(_train(tmp_path, damaged_data), str(damaged_data / SHARDS), 'prepare')


def test_a_shard_with_fewer_records(tmp_path, damaged_data):  # issue 25, 14
  """A whole record missing at the end reads as a shorter file: the count gives it away."""
  shard = _shard(damaged_data, 'test')
  records, data, offset = [], shard.read_bytes(), 0
  while offset < len(data):  # TFRecord: length (8), its CRC (4), the record, its CRC (4)
    length = int.from_bytes(data[offset:offset + 8], 'little')
    records.append(data[offset:offset + 16 + length])
    offset += 16 + length
  shard.write_bytes(b''.join(records[:-10]))
  assert_user_error(_train(tmp_path, damaged_data), 'damaged', 'only 90')


def test_a_data_dir_without_permission(tmp_path, damaged_data):
  """As root the permission bits bind only without CAP_DAC_OVERRIDE (dropped with setpriv)."""
  prefix = ()
  if os.geteuid() == 0:
    if shutil.which('setpriv') is None:
      pytest.skip('root ignores permissions; setpriv drops that')
    prefix = ('setpriv', '--bounding-set=-dac_override,-dac_read_search')
  os.chmod(damaged_data / SHARDS, 0)
  try:
    assert_user_error(_train(tmp_path, damaged_data, prefix=prefix), 'permission',
                      str(damaged_data))
  finally:
    os.chmod(damaged_data / SHARDS, 0o755)

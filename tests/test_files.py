"""files: outputs replaced whole, together, under temporary names of their own; locks."""

import pathlib

import pytest

from cifar100_flax import files


def test_write_all_replaces_every_file_and_leaves_no_temporary(tmp_path):
  files.write_all({tmp_path / 'a.json': '{}', tmp_path / 'b.npz': b'\x00\x01'})
  files.write_all({tmp_path / 'a.json': '{"new": 1}', tmp_path / 'b.npz': b'\x02'})
  assert (tmp_path / 'a.json').read_text() == '{"new": 1}'
  assert (tmp_path / 'b.npz').read_bytes() == b'\x02'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.json', 'b.npz']


def test_a_failure_keeps_every_earlier_file(tmp_path):
  files.write_all({tmp_path / 'model.onnx': b'old', tmp_path / 'model.onnx.json': 'old'})
  with pytest.raises(RuntimeError):
    with files.replaced_together([tmp_path / 'model.onnx', tmp_path / 'model.onnx.json']) as (m, j):
      m.write_bytes(b'new')
      raise RuntimeError('the check against JAX failed')
  assert (tmp_path / 'model.onnx').read_bytes() == b'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx', 'model.onnx.json']


def test_a_folder_replaces_a_folder(tmp_path):
  (tmp_path / 'saved_model').mkdir()
  (tmp_path / 'saved_model' / 'old.pb').write_bytes(b'old')
  with files.replaced(tmp_path / 'saved_model') as partial:
    partial.mkdir()
    (partial / 'new.pb').write_bytes(b'new')
  assert [p.name for p in (tmp_path / 'saved_model').iterdir()] == ['new.pb']
  assert [p.name for p in tmp_path.iterdir()] == ['saved_model']


def test_temporaries_of_one_output_differ(tmp_path):
  with files.replaced(tmp_path / 'x') as first, files.replaced(tmp_path / 'x') as second:
    assert first != second and first.parent == second.parent == tmp_path
    first.write_text('1')
    second.write_text('2')
  assert (tmp_path / 'x').read_text() in '12'


def test_a_lock_held_is_not_taken_again_without_waiting(tmp_path):
  path = pathlib.Path(tmp_path)
  with files.locked(path) as taken:
    assert taken
    with files.locked(path, shared=True, wait=False) as again:
      assert not again
  with files.locked(path, shared=True, wait=False) as free:
    assert free

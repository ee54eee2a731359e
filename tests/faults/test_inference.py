"""Predictions and exports given a full disk, a signal, a second export at once, and pictures that
are not what they seem (a named pipe, a loop of links, a huge PNG, NaN pixels): each stops in one
line or reads what it can, keeps every earlier output whole, and costs bounded memory."""

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import PIL.Image
import pytest

from tests.faults.battery import (
  TINY,
  assert_clean_exit,
  assert_success,
  assert_user_error,
  command,
  environment,
  fingerprint,
  interrupted,
  main_py,
  mounted,
)
from tests.helpers import REPO

EXPORT = 'cifar100_flax.inference.export'
# Runs the command after it in a child and leaves that child's peak resident memory (KB) in the
# file named first.
PEAK_MEMORY = ('import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; '
               'open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN)'
               '.ru_maxrss)); sys.exit(code)')


def _export(run, output, fmt, fault=None):
  return main_py('--mode=export', f'--workdir={run}', f'--output={output}', f'--format={fmt}',
                 fault=fault)


def _predict(run, *images, output=None, fault=None, **kwargs):
  output_flag = [f'--output={output}'] if output else []
  return main_py('--mode=predict', f'--workdir={run}', *output_flag,
                 *[f'--images={image}' for image in images], fault=fault, **kwargs)


def _picture(path, colour=(200, 30, 30)):
  PIL.Image.new('RGB', (40, 40), colour).save(path)
  return path


def _assert_unreadable(outcome, path, *words):
  """predict read the other pictures and said why it could not read `path`, in one line that
  holds every one of `words` (exit 2; then a line that counts such paths)."""
  assert outcome.code == 2, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 2 and outcome.lines[0].startswith(f'error: {path}: '), outcome
  for word in words:
    assert word in outcome.lines[0], f'{word!r} not in {outcome.lines[0]!r}'


def _onnx_workdir(path):
  """The workdir recorded inside an exported model.onnx (its metadata)."""
  import onnx
  metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
  return json.loads(metadata['workdir'])


def _assert_whole_onnx_export(folder):
  """`folder` holds one ONNX export and its record, of the same run, and no temporary; the model
  runs."""
  import onnxruntime
  assert sorted(p.name for p in folder.iterdir()) == ['model.onnx', 'model.onnx.json']
  record = json.loads((folder / 'model.onnx.json').read_text())
  session = onnxruntime.InferenceSession(str(folder / 'model.onnx'))
  images = np.zeros((2, 32, 32, 3), np.uint8)
  assert session.run(None, {'images': images})[0].shape == (2, 100)
  assert _onnx_workdir(folder / 'model.onnx') == record['workdir']


def test_a_full_disk_during_an_export_keeps_the_previous_export(tmp_path, run, data_dir):
  """issue 39, 2: the model was written in place: a wider model's export over a smaller one's
  on a full disk left a truncated model.onnx that onnxruntime cannot load, beside the previous
  model.onnx.json, and a traceback."""
  wide = tmp_path / 'wide'
  assert_success(main_py(*TINY, f'--workdir={wide}', f'--config.data.dir={data_dir}',
                         '--config.model.kwargs.widths=(64,)', '--config.train.num_epochs=1'))
  with mounted(tmp_path / 'mount', size='8m') as mount:
    assert_success(_export(run, mount / 'export', 'onnx'))
    before = fingerprint(mount / 'export')
    subprocess.run(['dd', 'if=/dev/zero', f'of={mount / "filler"}', 'bs=64k'], capture_output=True)
    line = assert_user_error(_export(wide, mount / 'export', 'onnx'), 'disk is full')
    assert 'run the same command again' in line
    assert fingerprint(mount / 'export') == before
    _assert_whole_onnx_export(mount / 'export')


@pytest.mark.parametrize('fmt, target', [('stablehlo', f'{EXPORT}:_max_difference'),
                                         ('savedmodel', 'tensorflow:saved_model.save')])
def test_a_signal_during_an_export_keeps_the_previous_export(tmp_path, run, fmt, target):
  """issue 39, 2: SIGTERM while comparing with JAX left an unchecked model beside the previous
  .json; during a SavedModel export the previous saved_model/ was deleted first."""
  output = tmp_path / 'export'
  assert_success(_export(run, output, fmt))
  before = fingerprint(output)
  outcome = _export(run, output, fmt, fault=f'SIGTERM-at-{target}')
  assert outcome.code == 1, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 1 and 'interrupted' in outcome.lines[0], outcome
  assert fingerprint(output) == before
  assert not list(output.glob('.*')), list(output.iterdir())


def test_two_exports_at_once_end_as_one_whole_pair(tmp_path, run):
  """issue 39, 2: the first export, slower to compare, wrote its .json last: the second's model
  beside the first's record, both exit 0."""
  other = tmp_path / 'other'
  other.symlink_to(run)  # the same run under another name, which each model records
  output = tmp_path / 'export'
  first = subprocess.Popen(
    command('--mode=export', f'--workdir={run}', f'--output={output}', '--format=onnx',
            fault=f'pause-at-{EXPORT}:_max_difference'),
    cwd=REPO, env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    stderr=subprocess.PIPE, text=True)
  try:
    said = iter(first.stdout.readline, '')
    assert any(line.strip().endswith('paused') for line in said), first.stderr.read()
    assert_success(_export(other, output, 'onnx'))
    _, err = first.communicate('\n', timeout=300)
  finally:
    first.kill()
  assert first.returncode == 0, err
  _assert_whole_onnx_export(output)


def test_a_full_disk_during_predict_keeps_the_previous_predictions(tmp_path, run):
  """issue 39, 3: predictions.csv was written in place: the predictions of more pictures than
  the previous ones on a full disk left it truncated, and a traceback."""
  pictures = [_picture(tmp_path / f'{i}.png', (i, 0, 0)) for i in range(100)]
  with mounted(tmp_path / 'mount', size='1m') as mount:
    output = mount / 'predictions.csv'
    assert_success(_predict(run, *pictures[:2], output=output))
    before = output.read_bytes()
    subprocess.run(['dd', 'if=/dev/zero', f'of={mount / "filler"}', 'bs=64k'], capture_output=True)
    line = assert_user_error(_predict(run, tmp_path, output=output), 'disk is full')
    assert 'predictions.csv is kept' in line
    assert output.read_bytes() == before
    assert sorted(p.name for p in mount.iterdir()) == ['filler', 'predictions.csv']


def test_a_signal_while_predictions_are_written_keeps_the_previous_ones(tmp_path, run):
  """issue 39, 3: SIGTERM while predictions.csv was written left part of its rows."""
  pictures = [_picture(tmp_path / f'{i}.png', (40 * i, 0, 0)) for i in range(6)]
  assert_success(_predict(run, *pictures))
  before = fingerprint(run)
  outcome = _predict(run, *pictures, fault='SIGTERM-at-csv:writer')
  assert outcome.code == 1, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 1 and 'interrupted' in outcome.lines[0], outcome
  assert fingerprint(run) == before


def test_a_named_pipe_is_not_read(tmp_path, run):
  """issue 39, 6: predict opened a named pipe and waited for a writer for ever."""
  os.mkfifo(tmp_path / 'pipe.png')
  outcome = _predict(run, tmp_path / 'pipe.png', _picture(tmp_path / 'red.png'), timeout=120)
  _assert_unreadable(outcome, tmp_path / 'pipe.png', 'not a regular file', 'named pipe')
  with (run / 'predictions.csv').open() as f:
    assert [row['file'] for row in csv.DictReader(f)] == [str(tmp_path / 'red.png')]


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_pictures_are_read_stops_at_once(tmp_path, run, sig):
  """issue 39, 6: a signal stopped nothing while a read hung: the main thread waited for the
  reading threads (a second signal was needed)."""
  pictures = [str(_picture(tmp_path / f'{i}.png')) for i in range(3)]
  outcome = interrupted('--mode=predict', f'--workdir={run}', *pictures, when='hanging',
                        signals=[sig], fault='hang-at-PIL.Image:open', timeout=120)
  assert outcome.code == 1, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 1 and 'interrupted' in outcome.lines[0], outcome
  assert not (run / 'predictions.csv').exists()


def test_a_loop_of_links_gives_each_picture_once(tmp_path, run):
  """issue 39, 7: `**` followed links to folders: with one loop a picture was predicted 41
  times, with two the walk never ended."""
  photos = tmp_path / 'photos'
  (photos / 'trip').mkdir(parents=True)
  _picture(photos / 'trip' / 'red.png')
  (photos / 'trip' / 'back').symlink_to(photos)
  (photos / 'again').symlink_to(photos)
  (tmp_path / 'elsewhere').mkdir()
  _picture(tmp_path / 'elsewhere' / 'blue.png', (0, 0, 200))
  (photos / 'linked').symlink_to(tmp_path / 'elsewhere')  # walked once
  assert_success(_predict(run, f'{photos}/**/*.png', timeout=120))
  with (run / 'predictions.csv').open() as f:
    assert sorted(row['file'] for row in csv.DictReader(f)) == [
        str(photos / 'linked' / 'blue.png'), str(photos / 'trip' / 'red.png')]


def _black_png(path, side):
  """An RGB PNG of side x side black pixels, compressed row by row: a few hundred KB."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  compressor = zlib.compressobj(9)
  row = bytes(1 + 3 * side)  # a filter byte, then the pixels
  pixels = b''.join(compressor.compress(row) for _ in range(side)) + compressor.flush()
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 2,
                                                                   0, 0, 0))
                   + chunk(b'IDAT', pixels) + chunk(b'IEND', b''))


def test_a_huge_png_is_refused_from_its_header(tmp_path, run):
  """issue 39, 18: a PNG of 13000x13000 (under Pillow's limit, with its warning on stderr) cost
  4.1 GB to read."""
  _black_png(tmp_path / 'huge.png', 13000)
  peak = tmp_path / 'peak_kb'
  small = main_py('--mode=predict', f'--workdir={run}', f'--images={_picture(tmp_path / "a.png")}',
                  prefix=(sys.executable, '-c', PEAK_MEMORY, str(peak)))
  assert_success(small)
  small_kb = int(peak.read_text())
  outcome = _predict(run, tmp_path / 'huge.png', tmp_path / 'a.png',
                     prefix=(sys.executable, '-c', PEAK_MEMORY, str(peak)))
  _assert_unreadable(outcome, tmp_path / 'huge.png', '13000x13000', 'million a picture may have')
  assert int(peak.read_text()) < small_kb + 200_000, 'reading took more than 200 MB more'


def test_a_float_tiff_with_nan_pixels_is_said(tmp_path, run):
  """issue 39, 19: a float TIFF holding NaN was classified, with NumPy's RuntimeWarning."""
  pixels = np.full((40, 40), 0.5, np.float32)
  pixels[10:20, 10:20] = np.nan
  PIL.Image.fromarray(pixels).save(tmp_path / 'nan.tif')
  outcome = _predict(run, tmp_path / 'nan.tif', _picture(tmp_path / 'red.png'))
  _assert_unreadable(outcome, tmp_path / 'nan.tif', 'holds NaN pixels')

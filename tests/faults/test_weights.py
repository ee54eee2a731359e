"""Weight files a hostile or careless user points to: nothing in them runs, and each is refused in
one line that says what is wrong with it."""

import os
import pathlib
import subprocess
import sys

import pytest

from tests.faults.battery import (
  TINY,
  Outcome,
  assert_success,
  assert_user_error,
  environment,
  main_py,
)
from tests.helpers import REPO

FIXTURE = REPO / 'tests' / 'fixtures' / 'resnet_basic.safetensors'
# A ResNet-18 as narrow as tests/fixtures/resnet_basic.safetensors (whose ResNet has stages of
# 2, 1, 1 and 1 basic blocks, of width 4).
RESNET_CONFIG = """
import ml_collections
from tests.tiny_config import get_config as tiny

def get_config():
  config = tiny()
  config.model.name = 'resnet18'
  config.model.kwargs = ml_collections.ConfigDict(dict(width=4, stem='cifar'))
  return config
"""


def _resnet(tmp_path):
  path = tmp_path / 'resnet_config.py'
  path.write_text(RESNET_CONFIG)
  return f'--config={path}'


def _convert(source, out, env=None):
  result = subprocess.run([sys.executable, 'main.py', '--mode=convert', f'--weights={source}',
                           f'--output={out}', '--model=resnet18'], cwd=REPO, capture_output=True,
                          text=True, env={**environment(), **(env or {})}, timeout=300)
  return Outcome(result.returncode, result.stdout, result.stderr)


def _malicious_pth(path: pathlib.Path, marker: pathlib.Path) -> None:
  torch = pytest.importorskip('torch')

  class Payload:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)
  torch.save({'conv1.weight': torch.zeros(4, 3, 3, 3), 'evil': Payload()}, path)


def test_a_malicious_pickle_never_runs(tmp_path):  # issue 25, 10
  marker, weights = tmp_path / 'ran', tmp_path / 'evil.pth'
  _malicious_pth(weights, marker)
  line = assert_user_error(_convert(weights, tmp_path / 'out.msgpack'), str(weights), 'unsafe',
                           '.safetensors')
  assert 'weights_only=False' not in line
  assert not marker.exists() and not (tmp_path / 'out.msgpack').exists()


def test_a_malicious_pickle_as_pretrained_weights_never_runs(tmp_path, data_dir):
  marker, weights = tmp_path / 'ran', tmp_path / 'evil.pth'
  _malicious_pth(weights, marker)
  outcome = main_py(_resnet(tmp_path), *TINY[1:],
                    f'--workdir={tmp_path / "run"}', f'--config.data.dir={data_dir}',
                    f'--config.model.pretrained={weights}')
  line = assert_user_error(outcome, 'unsafe')
  assert 'weights_only=False' not in line and not marker.exists()


@pytest.mark.parametrize('damage', ['truncated', 'random'])
def test_a_damaged_safetensors_file(tmp_path, damage):  # issue 25, 10
  weights = tmp_path / 'weights.safetensors'
  data = FIXTURE.read_bytes()
  weights.write_bytes(data[:len(data) // 2] if damage == 'truncated' else os.urandom(4096))
  assert_user_error(_convert(weights, tmp_path / 'out.msgpack'), str(weights), 'not a valid')


def test_random_bytes_as_msgpack(tmp_path, data_dir):  # issue 25, 10
  weights = tmp_path / 'weights.msgpack'
  weights.write_bytes(os.urandom(4096))
  outcome = main_py(*TINY, f'--workdir={tmp_path / "run"}', f'--config.data.dir={data_dir}',
                    f'--config.model.pretrained={weights}')
  assert_user_error(outcome, str(weights), 'not a valid')


def test_a_key_the_converter_cannot_place(tmp_path):  # issue 25, 10
  safetensors = pytest.importorskip('safetensors.numpy')
  import numpy as np
  weights = tmp_path / 'odd.safetensors'
  safetensors.save_file({'layer1.weight': np.zeros((4, 4, 3, 3), np.float32),
                         'head.bias': np.zeros(3, np.float32)}, str(weights))
  assert_user_error(_convert(weights, tmp_path / 'out.msgpack'), str(weights), 'layer1.weight')


def test_every_missing_and_misshaped_key_is_listed(tmp_path, data_dir):
  outcome = main_py(_resnet(tmp_path), *TINY[1:],
                    f'--workdir={tmp_path / "run"}', f'--config.data.dir={data_dir}',
                    f'--config.model.pretrained={FIXTURE}')
  # The fixture's stages have 2, 1, 1, 1 blocks (resnet18's 2, 2, 2, 2) and a 7x7 stem.
  line = assert_user_error(outcome, 'do not fit', 'missing: params/layer2_1/conv1/kernel',
                           'missing: batch_stats/layer4_1/bn2/var',
                           'mis-shaped: params/conv1/kernel: (7, 7, 3, 4), model wants '
                           '(3, 3, 3, 4)')
  assert line.count('missing:') == 30 and 'layer1_1' not in line  # 3 blocks x 10


def test_a_hub_id_offline(tmp_path, data_dir):
  env = {'HF_HUB_OFFLINE': '1'}
  assert_user_error(_convert('timm/resnet18.a1_in1k', tmp_path / 'out.msgpack', env),
                    'timm/resnet18.a1_in1k', 'Offline')


def test_a_weights_file_that_does_not_exist(tmp_path, data_dir):
  outcome = main_py(_resnet(tmp_path), *TINY[1:], f'--workdir={tmp_path / "run"}',
                    f'--config.data.dir={data_dir}',
                    '--config.model.pretrained=weights/nope.safetensors')
  assert_user_error(outcome, 'weights/nope.safetensors: no such weights file')
  assert not (tmp_path / 'run').exists(), 'a run that could not start left a workdir'


def test_convert_into_a_missing_folder_makes_it(tmp_path):  # issue 25, 10
  # As every output of the command line: the folder is made (an unwritable one is refused first).
  assert_success(_convert(FIXTURE, tmp_path / 'new' / 'out.msgpack'))
  assert (tmp_path / 'new' / 'out.msgpack').stat().st_size > 0
  blocker = tmp_path / 'file'
  blocker.write_text('')
  assert_user_error(_convert(FIXTURE, blocker / 'out.msgpack'), str(blocker))


def test_convert_writes_what_loads(tmp_path):
  result = _convert(FIXTURE, tmp_path / 'out.msgpack')
  assert_success(result)
  assert (tmp_path / 'out.msgpack').stat().st_size > 0

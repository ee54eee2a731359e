"""What a run keeps or names as trusted, tried after it changed: pretrained weights that moved
away, data that moved, config values no training can use, a config.json, a checkpoint's progress
record and a .msgpack that parse but hold something else. Each is read at the one place it is
needed and checked where it is read: the run goes on, or stops in one line that names the file
and the key."""

import json
import pathlib
import shutil
import subprocess

import flax
import jax
import msgpack
import numpy as np
import pytest
from PIL import Image

from cifar100_flax.training import states
from tests.faults.battery import (
  TINY,
  Outcome,
  assert_success,
  assert_user_error,
  command,
  copy_run,
  environment,
  fingerprint,
  main_py,
  steps_saved,
)
from tests.helpers import REPO
from tests.tiny_config import get_config as tiny_config


def _tiny_weights(path: pathlib.Path) -> pathlib.Path:
  """A .msgpack of the tiny CNN's variables (zeros), as `--mode=convert` writes weights."""
  config = tiny_config()
  shapes = states.abstract_variables(states.create_model(config, 'xla'), config)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  path.write_bytes(flax.serialization.msgpack_serialize(variables))
  return path


@pytest.fixture(scope='module')
def pretrained_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """A one-epoch run started from pretrained weights, which have since been deleted."""
  root = tmp_path_factory.mktemp('pretrained')
  weights = _tiny_weights(root / 'weights.msgpack')
  workdir = root / 'run'
  assert_success(main_py(*TINY, f'--workdir={workdir}', f'--config.data.dir={data_dir}',
                         f'--config.model.pretrained={weights}', '--config.train.num_epochs=1'))
  weights.unlink()
  return workdir


def _picture(folder: pathlib.Path) -> pathlib.Path:
  path = folder / 'picture.png'
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
  return path


@pytest.mark.parametrize('mode', ['eval', 'predict', 'export'])
def test_a_run_from_pretrained_weights_outlives_them(tmp_path, pretrained_run, mode):
  """issue 39, 12: the checkpoints hold every weight; the file is read at step 0 only."""
  run = copy_run(pretrained_run, tmp_path / 'run')
  images = [f'--images={_picture(tmp_path)}'] if mode == 'predict' else []
  assert_success(main_py(f'--mode={mode}', f'--workdir={run}', *images))


@pytest.mark.parametrize('pretrained', ['as-trained', 'none'])
def test_a_run_from_pretrained_weights_resumes_without_them(tmp_path, pretrained_run,
                                                            data_dir, pretrained):
  """issue 39, 12: the weights gone, or named as none: config.json still says what it began
  from."""
  run = copy_run(pretrained_run, tmp_path / 'run')
  recorded = json.loads((run / 'config.json').read_text())['model']['pretrained']
  newest = steps_saved(run)[-1]
  shutil.rmtree(run / 'checkpoints' / str(newest))
  given = recorded if pretrained == 'as-trained' else ''
  outcome = main_py(*TINY, f'--workdir={run}', f'--config.data.dir={data_dir}',
                    f'--config.model.pretrained={given}', '--config.train.num_epochs=1')
  assert_success(outcome)
  assert 'resuming from step' in outcome.out and steps_saved(run)[-1] == newest
  assert json.loads((run / 'config.json').read_text())['model']['pretrained'] == recorded


def _moved_data(run: pathlib.Path, tmp_path: pathlib.Path) -> None:
  config = json.loads((run / 'config.json').read_text())
  config['data']['dir'] = str(tmp_path / 'moved')
  (run / 'config.json').write_text(json.dumps(config))


def test_a_run_whose_data_moved_says_both_ways_to_point_to_it(tmp_path, run):
  """issue 39, 13."""
  _moved_data(run, tmp_path)
  before = fingerprint(run)
  assert_user_error(main_py('--mode=eval', f'--workdir={run}'), str(tmp_path / 'moved'),
                    '--config.data.dir=DIR', 'TFDS_DATA_DIR=DIR')
  assert fingerprint(run) == before


@pytest.mark.parametrize('way', ['flag', 'flat-flag', 'environment'])
def test_a_run_whose_data_moved_reads_it_where_the_error_says(tmp_path, run, data_dir, way):
  """issue 39, 13: --config.data.dir without --config (also as the flat key of before the
  nesting), or TFDS_DATA_DIR, which wins over the dir config.json records."""
  _moved_data(run, tmp_path)
  flags = {'flag': [f'--config.data.dir={data_dir}'],
           'flat-flag': [f'--config.data_dir={data_dir}'], 'environment': []}[way]
  env = environment(TFDS_DATA_DIR=str(data_dir)) if way == 'environment' else environment()
  result = subprocess.run(command('--mode=eval', f'--workdir={run}', *flags), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert_success(Outcome(result.returncode, result.stdout, result.stderr))
  assert json.loads((run / 'eval_test.json').read_text())['num_examples'] == 100


def test_a_key_of_what_was_trained_is_not_given_to_a_run(run):
  """issue 39, 13: without --config, only keys of data, logging and compute change for a
  command; the others say what the checkpoints are."""
  before = fingerprint(run)
  assert_user_error(main_py('--mode=eval', f'--workdir={run}', '--config.optim.learning_rate=1'),
                    '--config.optim.learning_rate', 'config.json', 'data.dir')
  assert fingerprint(run) == before


@pytest.mark.parametrize('flag, words', [
    ('--config.schedule.triangular_start=-0.5', ['config.schedule.triangular_start', '[0, 1]']),
    ('--config.schedule.triangular_end=-1', ['config.schedule.triangular_end', '[0, 1]']),
    ('--config.schedule.piecewise_scale=-1', ['config.schedule.piecewise_scale', '(0, 1]']),
    ('--config.data.image_size=1', ['config.data.image_size', 'at least 2']),
    ('--config.eval.image_size=1', ['config.eval.image_size', 'at least 2']),
    ('--config.augment.rand_augment_ops=200', ['config.augment.rand_augment_ops', 'at most 14']),
    ('--config.augment.zoom=1.5', ['config.augment.zoom', '< 1']),
], ids=lambda v: v.removeprefix('--config.') if isinstance(v, str) else '')
def test_a_value_no_training_can_use_is_named(tmp_path, data_dir, flag, words):
  """issue 39, 14: each of these trained (a negative learning rate), crashed in a traceback, or
  compiled for minutes."""
  schedule = {'triangular': '--config.schedule.name=triangular',
              'piecewise': '--config.schedule.name=piecewise_constant'}
  extra = [value for key, value in schedule.items() if key in flag]
  if 'rand_augment' in flag:
    extra.append('--config.augment.auto_augment=rand')
  outcome = main_py(*TINY, f'--workdir={tmp_path / "run"}', f'--config.data.dir={data_dir}',
                    *extra, flag)
  assert_user_error(outcome, *words)
  assert not (tmp_path / 'run').exists()


_DAMAGED_CONFIGS = {
    'string-epochs': (lambda c: {**c, 'train': {**c['train'], 'num_epochs': '2'}},
                      'config.train.num_epochs'),
    'list': (lambda c: [], 'a list'),
    'null': (lambda c: None, 'null'),
    'subtree-string': (lambda c: {**c, 'optim': 'sgd'}, 'config.optim'),
    'unknown-key': (lambda c: {**c, 'train': {**c['train'], 'epochs': 2}}, 'config.train.epochs'),
}


@pytest.mark.parametrize('damage', list(_DAMAGED_CONFIGS))
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_a_config_json_of_valid_json_and_the_wrong_shape(run, data_dir, damage, mode):
  """issue 39, 15: named with its key, in every mode that reads it, nothing changed."""
  change, word = _DAMAGED_CONFIGS[damage]
  path = run / 'config.json'
  path.write_text(json.dumps(change(json.loads(path.read_text()))))
  before = fingerprint(run)
  flags = {'eval': ['--mode=eval'],
           'train': [*TINY, f'--config.data.dir={data_dir}']}[mode]
  assert_user_error(main_py(*flags, f'--workdir={run}'), str(path), word)
  assert fingerprint(run) == before


def _damage_progress(run: pathlib.Path, step: int, **fields) -> dict:
  path = run / 'checkpoints' / str(step) / 'progress' / 'metadata'
  record = {**json.loads(path.read_text()), **fields}
  path.write_text(json.dumps(record))
  return record


def test_a_progress_record_of_the_wrong_types_is_a_damaged_checkpoint(run, data_dir):
  """issue 39, 15: a string train_seconds trained, then crashed at the first save, losing the
  steps; now the checkpoint is set aside, kept, and the one before it resumed."""
  steps = steps_saved(run)
  shutil.rmtree(run / 'checkpoints' / str(steps[-1]))  # an unfinished run
  damaged = steps[-2]
  record = _damage_progress(run, damaged, train_seconds='forty')
  outcome = main_py(*TINY, f'--workdir={run}', f'--config.data.dir={data_dir}')
  assert_success(outcome)
  assert f'checkpoint {damaged} of' in outcome.out and 'train_seconds' in outcome.out
  assert steps_saved(run)[-1] == steps[-1]
  aside = run / 'checkpoints' / 'unreadable' / str(damaged) / 'progress' / 'metadata'
  assert json.loads(aside.read_text()) == record


@pytest.mark.parametrize('field', ['steps_per_epoch', 'early_stopping'])
def test_a_finished_run_with_a_damaged_progress_record_resumes_from_the_one_before(run, data_dir,
                                                                                 field):
  """issue 39, 15: read before the data loads, to say the run is finished; an unknown field of
  the early stopper (a later version's) is passed over, a string step count is damage."""
  newest = steps_saved(run)[-1]
  value = ('10' if field == 'steps_per_epoch'
           else {**json.loads((run / 'checkpoints' / str(newest) / 'progress' / 'metadata')
                              .read_text())['early_stopping'], 'later_field': 1})
  _damage_progress(run, newest, **{field: value})
  outcome = main_py(*TINY, f'--workdir={run}', f'--config.data.dir={data_dir}')
  assert_success(outcome)
  set_aside = (run / 'checkpoints' / 'unreadable' / str(newest)).exists()
  assert set_aside == (field == 'steps_per_epoch'), outcome
  assert steps_saved(run)[-1] == newest


def test_eval_passes_over_a_best_checkpoint_whose_progress_is_damaged(run):
  """issue 39, 15: as over one whose arrays are."""
  best = json.loads((run / 'eval_test.json').read_text())['checkpoint_step']
  _damage_progress(run, best, best_step='five')
  outcome = main_py('--mode=eval', f'--workdir={run}')
  assert_success(outcome)
  assert 'the best checkpoint cannot be read' in outcome.out


_NOT_VARIABLES = {'list': [1, 2, 3], 'other-keys': {'a': 1},
                  'strings': {'params': {'Conv_0': {'kernel': 'not an array'}}}}


@pytest.mark.parametrize('content', list(_NOT_VARIABLES))
@pytest.mark.parametrize('use', ['convert', 'pretrained'])
def test_a_msgpack_that_is_not_model_variables(tmp_path, data_dir, content, use):
  """issue 39, 15: valid msgpack of something else was an assertion traceback, or converted."""
  weights = tmp_path / 'weights.msgpack'
  weights.write_bytes(msgpack.packb(_NOT_VARIABLES[content]))
  out = tmp_path / 'out.msgpack'
  flags = {'convert': ['--mode=convert', f'--weights={weights}', '--model=resnet18',
                       f'--output={out}'],
           'pretrained': [*TINY, f'--workdir={tmp_path / "run"}', f'--config.data.dir={data_dir}',
                          f'--config.model.pretrained={weights}']}[use]
  assert_user_error(main_py(*flags), str(weights), 'not model variables')
  assert not out.exists()

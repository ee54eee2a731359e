"""Report, evaluation, ensembles, predictions and exports given what they cannot use: each input is
checked before any work, and an output is replaced whole or not at all."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from tests.faults.battery import (
  TINY,
  assert_success,
  assert_user_error,
  copy_run,
  fingerprint,
  main_py,
  mounted,
)


def test_report_of_a_never_evaluated_run(run):
  (run / 'eval_test.json').unlink()
  assert_user_error(main_py('--mode=report', f'--workdir={run}'), 'no test evaluation',
                    '--mode eval')


def test_eval_of_a_never_trained_workdir(tmp_path, data_dir):
  workdir = tmp_path / 'run'  # stopped before its first checkpoint: config.json only
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps({'data': {'dir': str(data_dir)}}))
  assert_user_error(main_py('--mode=eval', f'--workdir={workdir}'), 'no checkpoint', '--mode train')


@pytest.mark.parametrize('damage', ['gradcam-layer', 'no-checkpoints'])
def test_a_report_that_fails_keeps_the_previous_report(tmp_path, reported_run, damage):
  run = copy_run(reported_run, tmp_path / 'run')  # issue 25, 11
  flags = []
  if damage == 'gradcam-layer':
    flags = ['--gradcam_layer=nonexistent']
  else:
    shutil.rmtree(run / 'checkpoints')
  before = fingerprint(run)
  outcome = main_py('--mode=report', f'--workdir={run}', *flags)
  assert_user_error(outcome, 'nonexistent' if damage == 'gradcam-layer' else 'no checkpoint')
  assert fingerprint(run) == before


def test_a_full_disk_during_a_report_keeps_the_previous_report(tmp_path, reported_run):
  """The report used to open report.pdf (truncating it) and draw into it: a report of two runs,
  larger than the one of one run it replaces, then ran out of space halfway."""
  with mounted(tmp_path / 'mount', size='12m') as mount:  # issue 25, 11
    run = shutil.copytree(reported_run, mount / 'run')
    other = shutil.copytree(reported_run, mount / 'other')
    subprocess.run(['dd', 'if=/dev/zero', f'of={mount / "filler"}', 'bs=64k'], capture_output=True)
    before = fingerprint(run)
    line = assert_user_error(main_py('--mode=report', f'--workdir={run}', f'--workdir={other}'),
                             'disk is full')
    assert 'run the same command again' in line
    assert fingerprint(run) == before


def test_report_of_a_damaged_evaluation(run):
  (run / 'predictions_test.npz').write_bytes(b'PK\x03\x04 not really')
  assert_user_error(main_py('--mode=report', f'--workdir={run}'), 'predictions_test.npz',
                    '--mode eval')
  (run / 'eval_test.json').write_text('{')
  assert_user_error(main_py('--mode=report', f'--workdir={run}'), 'eval_test.json',
                    '--mode eval')


def test_an_ensemble_of_different_models(tmp_path, run, data_dir):
  other = tmp_path / 'wide'
  assert_success(main_py(*TINY, f'--workdir={other}', f'--config.data.dir={data_dir}',
                         '--config.model.kwargs.widths=(16,)', '--config.train.num_epochs=1'))
  outcome = main_py('--mode=eval', f'--workdir={run}', f'--workdir={other}',
                    f'--output={tmp_path / "ensemble"}')
  assert_success(outcome)
  ensemble = np.load(tmp_path / 'ensemble' / 'predictions_test.npz')['probs']
  members = [np.load(w / 'predictions_test.npz')['probs'] for w in (run, other)]
  np.testing.assert_allclose(ensemble, np.mean(members, axis=0), rtol=1e-6)
  assert_success(main_py('--mode=report', f'--workdir={run}', f'--workdir={tmp_path / "ensemble"}',
                         f'--output={tmp_path / "report"}'))


@pytest.mark.parametrize('mode', ['eval-ensemble', 'report', 'export', 'predict'])
def test_an_output_path_that_is_a_file(tmp_path, run, mode):  # issue 25, 12
  output = tmp_path / 'taken'
  output.write_text('keep me')
  other = copy_run(run, tmp_path / 'other')
  args = {'eval-ensemble': ['--mode=eval', f'--workdir={other}'],
          'report': ['--mode=report'], 'export': ['--mode=export', '--format=stablehlo'],
          'predict': ['--mode=predict', f'--images={run / "nothing.png"}']}[mode]
  output_flag = f'--output={output / "p.csv"}' if mode == 'predict' else f'--output={output}'
  outcome = main_py(f'--workdir={run}', *args, output_flag)
  assert_user_error(outcome, str(output), 'not a folder')
  assert 'evaluating' not in outcome.out, 'the check came after the work'
  assert output.read_text() == 'keep me'


def test_a_gradcam_layer_that_does_not_exist_is_named_with_the_layers_there_are(run):
  line = assert_user_error(main_py('--mode=report', f'--workdir={run}', '--gradcam_layer=conv9'),
                           'conv9')
  assert 'stage' in line or 'conv' in line

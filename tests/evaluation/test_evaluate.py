import json
import shutil
import tarfile

import jax
import numpy as np
import pytest

from cifar100_flax.config import loading
from cifar100_flax.data import preprocessing, tfds_pipeline
from cifar100_flax.errors import CheckpointError, ConfigError
from cifar100_flax.evaluation import evaluate
from cifar100_flax.training import checkpoints, restore, states, writers
from tests.helpers import MOCK_EXAMPLES, REPO, best_step, run_main, tiny_config

# A workdir (config.json, checkpoints/best, predictions_test.npz), packed.
OLD_RUN = REPO / 'tests' / 'fixtures' / 'old_run.tar.gz'


def test_eval_counts_every_test_image_and_matches_a_numpy_recount(trained):
  workdir, report = trained
  written = json.loads((workdir / 'eval_test.json').read_text())
  saved = np.load(workdir / 'predictions_test.npz')
  probs, labels = saved['probs'], saved['labels']
  assert probs.shape == (MOCK_EXAMPLES, 100) and written['num_examples'] == MOCK_EXAMPLES
  assert len(set(saved['ids'])) == MOCK_EXAMPLES
  assert written['top1_accuracy'] == pytest.approx((probs.argmax(1) == labels).mean())
  top5 = (np.argsort(-probs, 1)[:, :5] == labels[:, None]).any(1).mean()
  assert written['top5_accuracy'] == pytest.approx(top5)
  val = [(r['val_accuracy'], -r['step']) for r in writers.read_history(str(workdir))
         if 'val_accuracy' in r]
  assert written['checkpoint_step'] == -max(val)[1]  # the best checkpoint, the first at the top
  assert written == json.loads(json.dumps(report))
  recount = np.zeros((100, 100), int)
  np.add.at(recount, (labels, probs.argmax(1)), 1)  # rows: true classes, columns: predicted
  np.testing.assert_array_equal(written['confusion_matrix'], recount)
  assert len(written['per_class']['f1']) == 100


def test_eval_probabilities_are_the_model_applied_to_each_test_image(trained, mock_cifar):
  """The padded, batched, sharded evaluation gives what one plain call of the model gives."""
  workdir, _ = trained
  state, _ = restore.restore_model(tiny_config(), str(workdir))
  test = tfds_pipeline.load_splits(tiny_config(), with_train=False)['test']
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          preprocessing.preprocess(test.images, tiny_config()), train=False)
  saved = np.load(workdir / 'predictions_test.npz')
  np.testing.assert_array_equal(saved['ids'], test.ids)
  np.testing.assert_allclose(saved['probs'], jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)


def _copy_with_config(workdir, destination, **changes):
  shutil.copytree(workdir, destination)
  saved = json.loads((destination / 'config.json').read_text())
  for key, value in changes.items():  # by the flat names of tiny_config's overrides
    loading.set_key(saved, loading.FLAT_KEYS[key], value)
  (destination / 'config.json').write_text(json.dumps(saved))
  return destination


# Keys that change only the optimiser's state, whose structure the checkpoint records.
OPTIMISER_CHANGES = dict(optimizer='adamw', lookahead_every=4, frozen_params='^Conv_0/kernel$',
                         schedule='reduce_on_plateau', grad_clip_norm=1.0, num_epochs=7)


def test_a_run_evaluates_after_its_optimiser_keys_change(trained, mock_cifar, tmp_path):
  workdir, report = trained
  changed = _copy_with_config(workdir, tmp_path / 'changed', **OPTIMISER_CHANGES)
  config = loading.load_config(str(changed))
  # Resuming needs the optimiser's state as saved: that still refuses the changed config.
  template, _ = states.create_train_state(config, steps_per_epoch=1)
  with pytest.raises(CheckpointError):
    checkpoints.Checkpointer(str(changed), read_only=True).restore_latest(template)
  again = evaluate.evaluate(config, str(changed))
  assert again['top1_accuracy'] == report['top1_accuracy']
  np.testing.assert_allclose(np.load(changed / 'predictions_test.npz')['probs'],
                             np.load(workdir / 'predictions_test.npz')['probs'], atol=1e-6)


@pytest.mark.slow
def test_main_evaluates_a_run_whose_optimiser_keys_changed(trained, tmp_path):
  changed = _copy_with_config(trained[0], tmp_path / 'changed', **OPTIMISER_CHANGES)
  (changed / 'eval_test.json').unlink()
  result = run_main('--mode', 'eval', '--workdir', str(changed))
  assert result.returncode == 0, result.stderr
  assert 'top-1 accuracy' in result.stdout and (changed / 'eval_test.json').exists()


def test_a_checkpoint_written_before_the_restructuring_still_evaluates(mock_cifar, tmp_path):
  """tests/fixtures/old_run.tar.gz: trained with lookahead and a frozen parameter by the code of
  commit bbf6a98, with the probabilities that code's evaluation wrote."""
  with tarfile.open(OLD_RUN) as archive:
    archive.extractall(tmp_path, filter='data')
  workdir = tmp_path / 'old_run'
  expected = np.load(workdir / 'predictions_test.npz')['probs']
  (workdir / 'predictions_test.npz').unlink()
  report = evaluate.evaluate(loading.load_config(str(workdir)), str(workdir))
  assert report['checkpoint_step'] == 10
  np.testing.assert_allclose(np.load(workdir / 'predictions_test.npz')['probs'], expected,
                             atol=1e-5)


def test_eval_without_checkpoint_says_so(tmp_path, mock_cifar):
  with pytest.raises(CheckpointError, match='no checkpoint'):
    evaluate.evaluate(tiny_config(), str(tmp_path))


def test_checkpoint_of_another_model_is_refused(trained, mock_cifar):
  workdir, _ = trained
  config = tiny_config()
  config.model.kwargs.widths = (16,)
  with pytest.raises(CheckpointError, match='written for another model') as raised:
    evaluate.evaluate(config, str(workdir))
  assert str(workdir / 'checkpoints' / str(best_step(workdir))) in str(raised.value)
  assert 'params/BatchNorm_0/bias (8,) (the model has (16,))' in str(raised.value)


def test_corrupt_checkpoint_is_refused(trained, mock_cifar, tmp_path):
  workdir = tmp_path / 'copy'
  shutil.copytree(trained[0] / 'checkpoints', workdir / 'checkpoints')
  for path in (workdir / 'checkpoints').rglob('*'):
    if path.is_file() and 'state' in path.parts and path.stat().st_size > 1000:
      path.write_bytes(b'garbage')
  with pytest.raises(checkpoints.NoReadableCheckpoint, match='damaged') as raised:
    evaluate.evaluate(tiny_config(), str(workdir))
  assert 'steps 20, 10' in str(raised.value) and 'new --workdir' in str(raised.value)
  assert raised.value.__cause__ is not None  # what orbax said, for --traceback


def test_an_unreadable_checkpoint_is_a_permission_error_not_corrupt(trained, mock_cifar, tmp_path,
                                                                    monkeypatch):
  def denied(*args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(tmp_path / 'state'))
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'restore', denied)
  with pytest.raises(CheckpointError, match='permission denied') as raised:
    evaluate.evaluate(tiny_config(), str(trained[0]))
  assert 'corrupt' not in str(raised.value)


def test_eval_on_the_validation_split_counts_every_carved_out_image(trained, mock_cifar, tmp_path):
  workdir = shutil.copytree(trained[0], tmp_path / 'run')
  report = evaluate.evaluate(tiny_config(), str(workdir), split='validation')
  validation = tfds_pipeline.load_splits(tiny_config())['validation']
  saved = np.load(workdir / 'predictions_validation.npz')
  np.testing.assert_array_equal(saved['ids'], validation.ids)
  assert report['num_examples'] == len(validation) == tiny_config().data.validation_size
  assert json.loads((workdir / 'eval_validation.json').read_text())['num_examples'] == 40
  assert json.loads((workdir / 'eval_test.json').read_text()) == json.loads(
      (trained[0] / 'eval_test.json').read_text())  # the test results stay as they were


def test_eval_on_an_empty_validation_split_says_so(trained, mock_cifar):
  with pytest.raises(ConfigError, match='validation split is empty'):
    evaluate.evaluate(tiny_config(validation_size=0, early_stopping_patience=0), str(trained[0]),
                      split='validation')


def test_eval_prints_calibration_and_the_files_it_wrote(trained, mock_cifar, capsys):
  workdir, _ = trained
  report = evaluate.evaluate(loading.load_config(str(workdir)), str(workdir))
  out = capsys.readouterr().out
  assert (f"calibration error (ECE)  {report['calibration']['expected_calibration_error']:.4f}"
          in out)
  assert f"wrote {workdir / 'eval_test.json'} (every number) and" in out
  assert str(workdir / 'predictions_test.npz') in out

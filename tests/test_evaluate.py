import json
import shutil

import numpy as np
import pytest

from cifar100_flax import evaluate, train, writers
from cifar100_flax.errors import CheckpointError
from tests.conftest import MOCK_EXAMPLES, mocked_cifar, tiny_config


def test_eval_counts_every_test_image_and_matches_a_numpy_recount(trained):
  workdir, report = trained
  written = json.loads((workdir / 'eval_test.json').read_text())
  saved = np.load(workdir / 'predictions_test.npz')
  probs, labels = saved['probs'], saved['labels']
  assert probs.shape == (MOCK_EXAMPLES, 100) and written['num_examples'] == MOCK_EXAMPLES
  assert len(set(saved['ids'])) == MOCK_EXAMPLES
  np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
  assert written['top1_accuracy'] == pytest.approx((probs.argmax(1) == labels).mean())
  top5 = (np.argsort(-probs, 1)[:, :5] == labels[:, None]).any(1).mean()
  assert written['top5_accuracy'] == pytest.approx(top5)
  val = [(r['val_accuracy'], -r['step']) for r in writers.read_history(str(workdir)) if 'val_accuracy' in r]
  assert written['checkpoint_step'] == -max(val)[1]  # the best checkpoint, the first at the top
  assert written == json.loads(json.dumps(report))
  assert np.array(written['confusion_matrix']).sum() == MOCK_EXAMPLES
  assert len(written['per_class']['f1']) == 100


def test_eval_is_reproducible(trained, mock_cifar):
  workdir, report = trained
  assert evaluate.evaluate(tiny_config(), str(workdir))['top1_accuracy'] == report['top1_accuracy']


def test_eval_without_checkpoint_says_so(tmp_path, mock_cifar):
  with pytest.raises(CheckpointError, match='no checkpoint'):
    evaluate.evaluate(tiny_config(), str(tmp_path))


def test_checkpoint_of_another_model_is_refused(trained, mock_cifar):
  workdir, _ = trained
  config = tiny_config()
  config.model_kwargs.widths = (16,)
  with pytest.raises(CheckpointError, match='written for another model'):
    evaluate.evaluate(config, str(workdir))


def test_corrupt_checkpoint_is_refused(trained, mock_cifar, tmp_path):
  workdir = tmp_path / 'copy'
  shutil.copytree(trained[0] / 'checkpoints', workdir / 'checkpoints')
  for path in (workdir / 'checkpoints').rglob('*'):
    if path.is_file() and 'state' in path.parts and path.stat().st_size > 1000:
      path.write_bytes(b'garbage')
  with pytest.raises(CheckpointError, match='corrupt'):
    evaluate.evaluate(tiny_config(), str(workdir))

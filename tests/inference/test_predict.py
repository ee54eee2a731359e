import csv
import json

import numpy as np
import PIL.Image
import pytest

from cifar100_flax.data import cifar100, tfds_pipeline
from cifar100_flax.errors import UsageError
from cifar100_flax.inference import predict
from tests.helpers import mocked_cifar, run_main, tiny_config


@pytest.fixture(scope='module')
def test_pngs(trained, tmp_path_factory):
  """The mock test images eval saw, as PNG files in a folder, and what eval gave them."""
  folder = tmp_path_factory.mktemp('pngs')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    test = tfds_pipeline.load_splits(tiny_config(), with_train=False)['test']
  for image, name in zip(test.images, test.ids):
    PIL.Image.fromarray(image).save(folder / f'{name}.png')
  return folder, np.load(trained[0] / 'predictions_test.npz')


def test_pngs_of_test_images_get_evals_probabilities(trained, test_pngs, mock_cifar, tmp_path):
  folder, saved = test_pngs
  output = tmp_path / 'all.json'
  failures = predict.predict([tiny_config()], [str(trained[0])], [str(folder)], str(output),
                             top_k=cifar100.NUM_CLASSES)
  rows = json.loads(output.read_text())
  assert not failures and len(rows) == len(saved['ids'])
  by_id = {row['file'].rsplit('/', 1)[1][:-4]: row for row in rows}
  for i, example_id in enumerate(saved['ids']):
    row = by_id[example_id]
    probs = np.zeros(cifar100.NUM_CLASSES)
    for entry in row['top']:
      probs[cifar100.CLASS_NAMES.index(entry['class'])] = entry['probability']
    np.testing.assert_allclose(probs, saved['probs'][i], atol=1e-6)
    superclasses = np.bincount(cifar100.FINE_TO_COARSE, weights=saved['probs'][i])
    assert row['superclass']['class'] == cifar100.COARSE_CLASS_NAMES[superclasses.argmax()]


def test_an_ensemble_predicts_the_mean_of_its_members(trained, test_pngs, mock_cifar):
  pictures = np.stack([np.asarray(PIL.Image.open(p)) for p in sorted(test_pngs[0].iterdir())[:5]])
  members = [tiny_config(eval_flip_tta=True), tiny_config(eval_flip_tta=False)]
  alone = [predict.probabilities([c], [str(trained[0])], pictures) for c in members]
  assert not np.allclose(*alone)
  np.testing.assert_allclose(predict.probabilities(members, [str(trained[0])] * 2, pictures),
                             np.mean(alone, axis=0), atol=1e-7)


def test_bad_options_and_no_images_are_refused_before_any_work(trained, tmp_path):
  with pytest.raises(UsageError, match='--top_k=0'):
    predict.predict([tiny_config()], [str(trained[0])], [str(tmp_path)], 'p.csv', top_k=0)
  with pytest.raises(UsageError, match=r'--output=p.txt: predictions are written as \.csv'):
    predict.predict([tiny_config()], [str(trained[0])], [str(tmp_path)], 'p.txt')
  with pytest.raises(UsageError, match=f'no image could be read from {tmp_path} '
                                       r'\(images are \.jpg'):
    predict.predict([tiny_config()], [str(trained[0])], [str(tmp_path)], 'p.csv')


def test_main_predicts_what_it_can_read_and_says_what_it_cannot(trained, test_pngs, tmp_path):
  folder, saved = test_pngs
  first, second = sorted(folder.iterdir())[:2]
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'\xff\xd8 not really a JPEG')
  done = run_main('--mode', 'predict', '--workdir', str(trained[0]), '--images', str(first),
                  str(broken), str(second), str(tmp_path / 'missing.png'), '--top_k', '3')
  assert done.returncode == 2, done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
  assert errors == [f'error: {tmp_path / "missing.png"}: no such file, folder or match',
                    f'error: {broken}: not an image Pillow can read']
  with (trained[0] / 'predictions.csv').open() as f:
    rows = list(csv.DictReader(f))
  assert [row['file'] for row in rows] == [str(first), str(second)]
  index = {example_id: i for i, example_id in enumerate(saved['ids'])}
  for row, path in zip(rows, (first, second)):
    p = saved['probs'][index[path.stem]]
    assert row['class_1'] == cifar100.CLASS_NAMES[p.argmax()]
    assert abs(float(row['probability_1']) - p.max()) <= 1e-5
    table_row, = [line for line in done.stdout.splitlines() if line.startswith(str(path))]
    assert f" {row['class_1']} " in table_row


import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from cifar100_flax.data import tfds_pipeline
from cifar100_flax.errors import CheckpointError, UsageError
from cifar100_flax.inference import export, image_files
from cifar100_flax.training import states, steps
from tests.helpers import REPO, mocked_cifar, run_main, tiny_config

# Where the ONNX converter is missing, or cannot convert with this JAX (today's releases).
_ONNX_PROBLEM = export.format_problem('onnx')
needs_onnx = pytest.mark.skipif(bool(_ONNX_PROBLEM), reason=f'--format=onnx {_ONNX_PROBLEM}')


def _untrained(config):
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  return states.model_to_evaluate(state)


def _images(batch, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, 32, 32, 3), np.uint8)


def _onnx_session(path):
  import onnxruntime
  return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
  """The trained tiny run exported in every format it can be here, and the mock test images
  eval saw."""
  workdir, _ = trained
  out = tmp_path_factory.mktemp('export')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    paths = {fmt: export.export(tiny_config(), str(workdir), fmt, str(out))
             for fmt in export.FORMATS if not export.format_problem(fmt)}
    test = tfds_pipeline.load_splits(tiny_config(), with_train=False)['test']
  return paths, test, np.load(workdir / 'predictions_test.npz')


@needs_onnx
def test_onnx_gives_evals_probabilities_for_every_test_image(exported):
  paths, test, saved = exported
  probs = _onnx_session(paths['onnx']).run(['probabilities'], {'images': test.images})[0]
  np.testing.assert_array_equal(test.ids, saved['ids'])
  assert np.abs(probs - saved['probs']).max() <= 1e-4
  assert (probs.argmax(1) == saved['probs'].argmax(1)).all()


def test_stablehlo_round_trips_to_evals_probabilities(exported):
  paths, test, saved = exported
  restored = jax.export.deserialize(paths['stablehlo'].read_bytes())
  assert {'cpu', 'cuda', 'tpu'} <= set(restored.platforms)
  for batch in (1, len(test)):  # the batch dimension is free
    probs = np.asarray(restored.call(test.images[:batch]))
    assert np.abs(probs - saved['probs'][:batch]).max() <= 1e-5


@pytest.mark.skipif(bool(export.format_problem('savedmodel')),
                    reason=f"--format=savedmodel {export.format_problem('savedmodel')}")
def test_savedmodel_gives_evals_probabilities(exported):
  import tensorflow as tf
  paths, test, saved = exported
  serve = tf.saved_model.load(str(paths['savedmodel'])).signatures['serving_default']
  probs = next(iter(serve(images=tf.constant(test.images)).values())).numpy()
  assert np.abs(probs - saved['probs']).max() <= 1e-5


def test_each_export_records_its_classes_and_check(exported):
  paths, _, _ = exported
  for fmt, path in paths.items():
    record = json.loads(path.with_name(path.name + '.json').read_text())
    assert record['format'] == fmt and record['max_abs_difference'] <= 1e-4
    assert record['class_names'][:2] == ['apple', 'aquarium_fish']


@needs_onnx
def test_onnx_carries_the_class_names(exported):
  paths, _, _ = exported
  metadata = _onnx_session(paths['onnx']).get_modelmeta().custom_metadata_map
  assert json.loads(metadata['class_names'])[-1] == 'worm'


@pytest.mark.parametrize('model, kwargs, overrides', [
    # Upsampled on the device, all test-time augmentations, dropout and BatchNorm.
    ('cnn', dict(widths=(8, 8), convs_per_stage=1, hidden=16, dropout=0.5),
     dict(image_size=40, eval_flip_tta=True, eval_translate_tta=2)),
    ('airbench', dict(widths=(8, 8, 8), convs_per_stage=1), {}),
    # EfficientNet-Lite0 (no tiny variant: 24 s) was checked on its trained run (docs/).
    ('resnet18', dict(width=4, stem='cifar'), {}),
    ('vit_tiny_patch16', dict(width=16, depth=1, heads=2), dict(image_size=48)),
])
@needs_onnx
def test_onnx_of_each_model_matches_jax_at_two_batch_sizes(model, kwargs, overrides, tmp_path):
  import onnx
  config = tiny_config(model=model, **overrides)
  config.model.kwargs = kwargs
  state = _untrained(config)
  path = export.write(state, config, 'onnx', tmp_path)
  # Each weight once, however many test-time views use it.
  tensors = [t.raw_data for t in onnx.load(str(path)).graph.initializer if len(t.raw_data) > 1024]
  assert len(tensors) == len(set(tensors))
  # write() ran it with onnxruntime at batch sizes 1 and 5 against JAX.
  record = json.loads(path.with_name('model.onnx.json').read_text())
  assert record['max_abs_difference'] <= 1e-4


@needs_onnx
def test_a_bfloat16_run_exports_in_its_dtype_and_onnx_in_float32(tmp_path):
  config = tiny_config(dtype='bfloat16')
  state = _untrained(config)
  images = _images(5)
  stablehlo = export.write(state, config, 'stablehlo', tmp_path)
  # Eval with XLA's convolutions (oneDNN's add up bfloat16 products in another order).
  xla = state.replace(apply_fn=states.create_model(config, 'xla').apply)
  bfloat16 = np.asarray(steps.jit_eval_step(config)(xla, {
      'image': images, 'label': np.zeros(5, np.int32), 'mask': np.ones(5, bool)})[1])
  exported = np.asarray(jax.export.deserialize(stablehlo.read_bytes()).call(images))
  np.testing.assert_allclose(exported, jax.jit(export.inference_function(state, config))(images),
                             atol=1e-6)
  # Another program (eval's adds the metrics) is fused otherwise and rounds to bfloat16 elsewhere.
  assert np.abs(exported - bfloat16).max() <= 1e-3
  onnx_probs = _onnx_session(export.write(state, config, 'onnx', tmp_path)).run(
      ['probabilities'], {'images': images})[0]
  float32 = jax.jit(export.inference_function(state, config, 'float32'))(images)
  assert np.abs(onnx_probs - float32).max() <= 1e-4


def test_an_unknown_format_or_a_run_without_checkpoint_is_refused(trained, tmp_path):
  with pytest.raises(UsageError, match='--format=tflite: one of onnx, stablehlo, savedmodel'):
    export.export(tiny_config(), str(trained[0]), 'tflite')
  with pytest.raises(CheckpointError, match='no checkpoint'):  # one line from main.py
    export.export(tiny_config(), str(tmp_path), 'stablehlo')


def test_main_exports(trained, tmp_path):
  # StableHLO, the quickest to write: the ONNX path is the same but for the converter.
  done = run_main('--mode', 'export', '--workdir', str(trained[0]), '--format', 'stablehlo',
                  '--output', str(tmp_path / 'out'))
  assert done.returncode == 0, done.stderr
  assert (tmp_path / 'out' / 'model.jax_export').is_file()
  assert 'wrote ' in done.stdout and "largest difference from JAX's probabilities: 0" in done.stdout


@needs_onnx
def test_the_onnx_example_needs_neither_jax_nor_tensorflow(exported, tmp_path):
  from PIL import Image
  paths, test, _ = exported
  files = [tmp_path / f'{i}.png' for i in range(3)] + [tmp_path / 'wide.jpg', tmp_path / 'a.png']
  for image, path in zip(test.images, files):
    Image.fromarray(image).save(path)
  Image.fromarray(test.images[3]).resize((90, 40)).save(files[3])
  Image.fromarray(test.images[4]).convert('RGBA').rotate(30).save(files[4])  # transparent corners
  # An import of jax or tensorflow in the example would fail.
  blocked = ("import runpy, sys; sys.modules.update(jax=None, tensorflow=None); "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
  done = subprocess.run([sys.executable, '-c', blocked, str(REPO / 'examples/onnx_classify.py'),
                         str(paths['onnx']), *map(str, files), '--top_k', '1'],
                        capture_output=True, text=True, timeout=120, check=True)
  # What --mode predict's reading of the same files gives.
  expected = _onnx_session(paths['onnx']).run(
      ['probabilities'], {'images': np.stack([image_files.read(str(f)) for f in files])})[0]
  names = json.loads(paths['onnx'].with_name('model.onnx.json').read_text())['class_names']
  lines = done.stdout.splitlines()
  assert len(lines) == len(files)
  for line, p, path in zip(lines, expected, files):
    shown_path, shown = line.split(': ')
    name, probability = shown.split()
    assert (shown_path, name) == (str(path), names[p.argmax()])
    assert abs(float(probability) - p.max()) <= 1e-4


def test_a_format_whose_converter_cannot_work_is_refused_before_restoring(monkeypatch, tmp_path):
  monkeypatch.setattr(export.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(UsageError, match=r'--format=onnx needs jax2onnx, onnx, onnx_ir, onnxruntime: '
                                       r'pip install --no-deps -r requirements-export.txt'):
    export.export(tiny_config(), str(tmp_path), 'onnx')

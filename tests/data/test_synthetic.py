"""config.data.name='synthetic': the whole of main.py without the dataset and without TensorFlow."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from cifar100_flax.data import cifar100, synthetic
from tests.helpers import REPO, tiny_config


def test_splits_have_cifars_sizes_and_are_the_same_for_the_same_seed():
  config = tiny_config(dataset='synthetic', validation_size=1000)
  splits = synthetic.load_splits(config)
  assert {k: len(v) for k, v in splits.items()} == {'train': 49_000, 'validation': 1000,
                                                     'test': 10_000}
  assert splits['train'].images.shape[1:] == cifar100.IMAGE_SHAPE
  assert splits['train'].images.dtype == np.uint8 and splits['train'].labels.max() < 100
  np.testing.assert_array_equal(splits['train'].coarse_labels,
                                cifar100.FINE_TO_COARSE[splits['train'].labels])
  small = synthetic.load_splits(tiny_config(dataset='synthetic', synthetic_size=500))
  assert {k: len(v) for k, v in small.items()} == {'train': 460, 'validation': 40, 'test': 100}
  again = synthetic.load_splits(config, with_train=False)
  np.testing.assert_array_equal(again['test'].images, splits['test'].images)
  other = synthetic.load_splits(tiny_config(dataset='synthetic', split_seed=1), with_train=False)
  assert not np.array_equal(other['test'].images, splits['test'].images)


def test_images_of_a_class_are_alike_so_that_a_model_can_learn():
  test = synthetic.load_splits(tiny_config(dataset='synthetic'), with_train=False)['test']
  images = test.images.reshape(len(test), -1).astype(np.float32)
  same = [np.corrcoef(images[test.labels == c][:2])[0, 1] for c in range(5)]
  others = [np.corrcoef(images[test.labels == c][0], images[test.labels == c + 1][0])[0, 1]
            for c in range(5)]
  assert min(same) > 0.8 and max(np.abs(others)) < 0.1


def test_batches_resume_at_the_step_and_split_among_processes():
  split = synthetic.load_splits(tiny_config(dataset='synthetic', validation_size=0))['train']
  batches = synthetic.train_batches(split, 10_000, seed=3)
  first = [next(batches) for _ in range(7)]  # past an epoch (5 batches)
  resumed = synthetic.train_batches(split, 10_000, seed=3, start_step=6)
  np.testing.assert_array_equal(next(resumed)['label'], first[6]['label'])
  assert not np.array_equal(first[5]['flip'], first[0]['flip'])  # the next epoch mirrors others
  halves = [next(synthetic.train_batches(split, 10_000, 3, 0, i, 2)) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([h['image'] for h in halves]), first[0]['image'])


@pytest.fixture
def without_tensorflow(tmp_path):
  """An environment in which importing TensorFlow or tensorflow-datasets fails."""
  for name in ('tensorflow', 'tensorflow_datasets'):
    (tmp_path / 'shims' / name).mkdir(parents=True)
    (tmp_path / 'shims' / name / '__init__.py').write_text(
        f'raise ImportError("{name} is unimportable in this test")\n')
  env = {k: v for k, v in os.environ.items() if k != 'CIFAR100_FLAX_TRACEBACK'}
  return {**env, 'PYTHONPATH': os.pathsep.join([str(tmp_path / 'shims'), str(REPO)])}


@pytest.mark.slow
def test_main_trains_resumes_evaluates_and_exports_without_tensorflow(without_tensorflow,
                                                                        tmp_path):
  workdir = tmp_path / 'run'
  train = [sys.executable, 'main.py', '--config=configs/smoke.py', '--config.data.name=synthetic',
           '--config.train.num_epochs=3', '--config.eval.every_steps=50', f'--workdir={workdir}']
  first = subprocess.Popen(train, cwd=REPO, env=without_tensorflow, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  for line in first.stdout:  # Ctrl-C once the first checkpoint is being written
    if line.startswith('validation at step 50'):
      first.send_signal(signal.SIGINT)
      break
  rest = first.communicate(timeout=300)[0]
  assert first.returncode == 1 and 'interrupted: stopped at step' in rest, rest
  run = lambda *args: subprocess.run(args, cwd=REPO, env=without_tensorflow, capture_output=True,
                                     text=True, timeout=300)
  resumed = run(*train)
  assert resumed.returncode == 0 and 'resuming from step' in resumed.stdout, resumed.stderr
  assert 'step 1053/1053' in resumed.stdout
  evaluated = run(sys.executable, 'main.py', '--mode=eval', f'--workdir={workdir}')
  assert evaluated.returncode == 0 and 'top-1 accuracy' in evaluated.stdout, evaluated.stderr
  exported = run(sys.executable, 'main.py', '--mode=export', '--format=stablehlo',
                 f'--workdir={workdir}')
  assert exported.returncode == 0, exported.stderr
  assert (workdir / 'export' / 'model.jax_export').is_file()
  assert (workdir / 'history.jsonl').is_file() and not list(workdir.glob('events.out.*'))


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_a_cpu_without_tensorflow(without_tensorflow, tmp_path):
  env = {**without_tensorflow, 'GPU_CHECK_WORKDIR': str(tmp_path / 'check')}
  result = subprocess.run(['bash', 'bench/gpu.sh'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0 and 'GPU CHECK ok' in result.stdout, result.stdout + result.stderr
  assert 'SKIP: no CUDA device' in result.stdout
  assert (tmp_path / 'check' / 'main' / 'eval_test.json').is_file()

"""Distillation (config.distill_from): the loss, the teachers' targets and a distilled run."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest

from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.errors import ConfigError
from cifar100_flax.training import checkpoints, distillation, loop, states, steps, workdirs
from tests.helpers import mocked_cifar, saved_steps, stop_after, tiny_config


def _log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _cross_entropy(targets, logits):
  return float(np.mean(-(targets * _log_softmax(logits)).sum(axis=-1)))


def _distributions(rng, n):
  return np.exp(_log_softmax(rng.normal(size=(n, cifar100.NUM_CLASSES)) * 3)).astype(np.float32)


def test_the_loss_at_temperature_1_and_weight_1_is_the_cross_entropy_to_the_teachers_probs():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, cifar100.NUM_CLASSES)).astype(np.float32) * 2
  labels, teacher = _distributions(rng, 6), _distributions(rng, 6)
  got = float(steps.distillation_loss(logits, labels, teacher, temperature=1.0, weight=1.0))
  assert got == pytest.approx(_cross_entropy(teacher, logits), rel=1e-5)
  # Weight 0: the labels' alone; between, the mix; T scales the soft term's logits and by T^2.
  assert float(steps.distillation_loss(logits, labels, teacher, 1.0, 0.0)) == pytest.approx(
      _cross_entropy(labels, logits), rel=1e-5)
  mixed = 0.3 * _cross_entropy(labels, logits) + 0.7 * 16 * _cross_entropy(teacher, logits / 4)
  assert float(steps.distillation_loss(logits, labels, teacher, 4.0, 0.7)) == pytest.approx(
      mixed, rel=1e-5)


def test_softened_probabilities_are_the_softmax_of_the_logits_over_the_temperature():
  logits = np.random.default_rng(1).normal(size=(4, cifar100.NUM_CLASSES)) * 5
  probs = np.exp(_log_softmax(logits))
  np.testing.assert_allclose(distillation.softened(probs, 1.0), probs, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(distillation.softened(probs, 3.0), np.exp(_log_softmax(logits / 3)),
                             rtol=1e-4, atol=1e-9)
  hot = np.eye(cifar100.NUM_CLASSES)[:2]  # zeros stay zero-ish, never NaN
  assert np.isfinite(distillation.softened(hot, 2.0)).all()


def test_a_step_with_teachers_at_weight_1_learns_the_teachers_distribution():
  config = tiny_config(distill_from='teacher', label_smoothing=0.0)
  config.augment.update(crop_padding=0, flip=False)
  config.distill.update(temperature=1.0, weight=1.0)
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (8, 32, 32, 3), np.uint8),
           'label': np.arange(8, dtype=np.int32), 'teacher': _distributions(rng, 8)}
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          preprocessing.preprocess(batch['image'], config), train=True,
                          mutable=['batch_stats'])[0]
  _, step_metrics = steps.jit_train_step(config)(state, batch)
  assert float(step_metrics.compute()['loss']) == pytest.approx(
      _cross_entropy(batch['teacher'], np.asarray(logits)), rel=1e-4)
  assert float(step_metrics.compute()['loss']) != pytest.approx(
      _cross_entropy(np.eye(cifar100.NUM_CLASSES)[:8], np.asarray(logits)), rel=1e-2)


@pytest.mark.parametrize('value, words', [
    (dict(distill_from='a,,b'), 'distill_from must name workdirs'),
    (dict(distill={'temperature': 0.0}), 'temperature must be > 0'),
    (dict(distill={'weight': 1.5}), 'weight must be in [0, 1]'),
])
def test_bad_distillation_values_are_refused_in_one_line(value, words, tmp_path):
  config = tiny_config()
  for key, v in value.items():
    config[key] = v if not isinstance(v, dict) else {**config[key].to_dict(), **v}
  with pytest.raises(ConfigError, match=words.replace('[', r'\[').replace(']', r'\]')):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize('teacher', ['missing', 'empty', 'itself'])
def test_a_teacher_that_is_not_a_trained_run_is_refused_before_anything_is_read(teacher,
                                                                                tmp_path):
  (tmp_path / 'empty').mkdir()
  student = tmp_path / 'student'
  name = {'itself': str(student)}.get(teacher, str(tmp_path / teacher))
  with pytest.raises(ConfigError, match='distill_from'):
    loop.train_and_evaluate(tiny_config(distill_from=name), str(student))
  assert not (student / workdirs.TEACHER_PREDICTIONS).exists()


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
  """Two tiny trained runs of other seeds."""
  folders = [str(tmp_path_factory.mktemp(f'teacher{seed}')) for seed in (1, 2)]
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    for seed, folder in zip((1, 2), folders):
      loop.train_and_evaluate(tiny_config(seed=seed, num_epochs=1), folder)
  return folders


def _student_config(teachers=()):
  """MixUp on: the teachers' targets are mixed with the images."""
  config = tiny_config(distill_from=','.join(teachers), eval_every_steps=5)
  config.augment.mixup_alpha = 0.2
  config.distill.update(temperature=2.0, weight=0.5)
  return config


def test_the_kept_targets_are_the_mean_of_the_teachers_predictions_and_serve_a_subset(
    mock_cifar, teachers, tmp_path):
  config = _student_config(teachers)
  split = cifar100.source(config).load_splits(config)['train']
  taught = distillation.with_teacher_targets(split, config, str(tmp_path))
  each = [distillation._predictions(teacher, split) for teacher in teachers]
  assert not np.allclose(each[0], each[1], atol=1e-3)
  np.testing.assert_allclose(taught.teacher, distillation.softened(np.mean(each, axis=0), 2.0),
                             rtol=1e-5, atol=1e-7)
  assert (tmp_path / workdirs.TEACHER_PREDICTIONS).exists()
  # A copy in a run of some of the images, in another order, serves it with their own rows.
  some = split.take(np.arange(len(split))[::-3])
  (tmp_path / 'some').mkdir()
  shutil.copy(tmp_path / workdirs.TEACHER_PREDICTIONS, tmp_path / 'some')
  np.testing.assert_array_equal(
      distillation.with_teacher_targets(some, config, str(tmp_path / 'some')).teacher,
      taught.teacher[::-3])
  # An image it lacks, or other teachers than the kept ones', are refused rather than guessed.
  stranger = dataclasses.replace(some, ids=np.concatenate([some.ids[:-1], ['train_99999']]))
  with pytest.raises(ConfigError, match='other teachers or images'):
    distillation.with_teacher_targets(stranger, config, str(tmp_path / 'some'))
  config.distill_from = teachers[0]
  with pytest.raises(ConfigError, match='other teachers or images'):
    distillation.with_teacher_targets(split, config, str(tmp_path))


@pytest.mark.slow
def test_a_distilled_run_resumes_or_starts_anew_exactly_without_its_teachers(
    mock_cifar, teachers, tmp_path, monkeypatch):
  config = _student_config(teachers)
  loop.train_and_evaluate(config, str(tmp_path / 'whole'))
  with monkeypatch.context() as patch:
    stop_after(patch, 12, 'crash')
    with pytest.raises(RuntimeError):
      loop.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert saved_steps(tmp_path / 'cut')[-1] == 10
  # A new run given a copy of the kept predictions needs the teachers no more either.
  (tmp_path / 'copied').mkdir()
  shutil.copy(tmp_path / 'whole' / workdirs.TEACHER_PREDICTIONS, tmp_path / 'copied')
  moved = [shutil.move(teacher, tmp_path / f'moved{i}') for i, teacher in enumerate(teachers)]
  try:  # the teachers gone, the kept predictions carry on
    loop.train_and_evaluate(config, str(tmp_path / 'cut'))
    loop.train_and_evaluate(config, str(tmp_path / 'copied'))
  finally:
    for teacher, where in zip(teachers, moved):
      shutil.move(where, teacher)
  template, _ = states.create_train_state(config, steps_per_epoch=1)
  whole = checkpoints.Checkpointer(str(tmp_path / 'whole')).restore_latest(template)[0]
  for other in ('cut', 'copied'):
    state = checkpoints.Checkpointer(str(tmp_path / other)).restore_latest(template)[0]
    assert int(whole.step) == int(state.step) == 20
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # And the teachers changed the training: a run without them ends elsewhere.
  loop.train_and_evaluate(_student_config(), str(tmp_path / 'alone'))
  lone = checkpoints.Checkpointer(str(tmp_path / 'alone')).restore_latest(template)[0]
  assert not np.allclose(jax.tree.leaves(lone.params)[0], jax.tree.leaves(whole.params)[0])

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax.data import preprocessing
from cifar100_flax.training import flops, states, steps
from tests.helpers import tiny_config


@pytest.mark.parametrize('tta', [False, True])
def test_flip_tta_predicts_an_image_and_its_mirror_alike(tta):
  config = tiny_config(eval_flip_tta=tta)
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
  predict = lambda images: steps.eval_step(
      state, {'image': images, 'label': np.zeros(4, np.int32), 'mask': np.ones(4, bool)}, config)[1]
  same = np.allclose(predict(images), predict(images[:, :, ::-1]), atol=1e-6)
  assert same == tta


@pytest.mark.parametrize('flip', [False, True])
def test_translate_tta_weights_the_image_and_its_two_shifted_copies(flip):
  config = tiny_config(eval_flip_tta=flip, eval_translate_tta=1)
  weights = np.random.default_rng(1).normal(size=(6, 5, 2, 3)).astype(np.float32)
  predict = lambda x: jnp.einsum('nhwc,hwck->nk', x, weights)  # position-sensitive, linear
  images = np.random.default_rng(0).normal(size=(2, 6, 5, 2)).astype(np.float32)

  def expected_for(x):
    return (predict(x) + predict(x[:, :, ::-1])) / 2 if flip else predict(x)

  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  expected = (expected_for(images) / 2 + expected_for(padded[:, :6, :5]) / 4
              + expected_for(padded[:, 2:, 2:]) / 4)
  np.testing.assert_allclose(steps.test_time_augmented(predict, images, config), expected,
                             rtol=1e-5, atol=1e-5)


def test_flops_per_step_counts_the_convolutions_and_scales_with_the_batch():
  config = tiny_config()  # one 3x3 convolution, 3 -> 8 channels, on 32x32 images
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  small, large = (flops.flops_per_step(config, state, n) for n in (16, 32))
  # Per image; its kernel gradient costs as much again. Counted with XLA's convolutions even when
  # the step runs oneDNN's (the default where it builds).
  conv_forward = 2 * 32 * 32 * 9 * 3 * 8
  assert 2 * conv_forward * 16 < small < 4 * conv_forward * 16
  assert large == pytest.approx(2 * small, rel=0.05)


def test_xla_cpu_options_reach_the_compiled_step():
  config = tiny_config()
  assert steps.compiler_options(config) is None
  config.cpu.xla_options.xla_cpu_experimental_ynn_fusion_type = 'NOT_A_FUSION_TYPE'
  assert steps.compiler_options(config) == {
      'xla_cpu_experimental_ynn_fusion_type': 'NOT_A_FUSION_TYPE'}
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  batch = {'image': np.zeros((4, 32, 32, 3), np.uint8), 'label': np.zeros(4, np.int32)}
  with pytest.raises(Exception, match='xla_cpu_experimental_ynn_fusion_type'):
    steps.jit_train_step(config)(state, batch)


def test_preprocess_resizes_and_normalises_for_a_pretrained_backbone():
  config = tiny_config(image_size=48, normalisation='unit')
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[1] = 255
  out = np.asarray(preprocessing.preprocess(images, config))
  assert out.shape == (2, 48, 48, 3)
  np.testing.assert_allclose(out[0], -1.0)
  np.testing.assert_allclose(out[1], 1.0)


def test_training_and_evaluation_sizes_differ_with_eval_image_size():
  config = tiny_config(image_size=48, eval_image_size=64)
  images = np.zeros((2, 32, 32, 3), np.uint8)
  assert preprocessing.preprocess(images, config).shape == (2, 64, 64, 3)
  assert preprocessing.preprocess(images, config, jax.random.PRNGKey(0)).shape == (2, 48, 48, 3)
  assert preprocessing.eval_image_size(tiny_config(image_size=48)) == 48


def test_progressive_resizing_trains_at_each_start_epochs_size_and_evaluates_at_full_size():
  config = tiny_config(image_size_schedule=((0, 16), (2.5, 24), (4, 32)))
  assert [preprocessing.train_image_size(config, e) for e in (0, 2.4, 2.5, 3.9, 4, 9)] == [
      16, 16, 24, 24, 32, 32]
  assert preprocessing.train_image_size(tiny_config(image_size=48), 3) == 48
  images = np.zeros((2, 32, 32, 3), np.uint8)
  augmented = preprocessing.preprocess(images, config, jax.random.PRNGKey(0), size=16)
  assert augmented.shape == (2, 16, 16, 3)
  assert preprocessing.preprocess(images, config).shape == (2, 32, 32, 3)


def test_ema_averages_weights_and_statistics_with_a_warm_up():
  config = tiny_config(ema_decay=0.99)
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  np.testing.assert_array_equal(state.ema['params']['Dense_0']['kernel'],
                                state.params['Dense_0']['kernel'])
  batch = {'image': np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8),
           'label': np.arange(8, dtype=np.int32)}
  start = jax.tree.map(np.asarray, state.ema)
  state, _ = steps.jit_train_step(config)(state, batch)
  decay = 1 / 10  # min(0.99, (1 + 0) / (10 + 0)) at the first step
  for name in ('params', 'batch_stats'):
    expected = jax.tree.map(lambda old, new: decay * old + (1 - decay) * new, start[name],
                            getattr(state, name))
    for got, want in zip(jax.tree.leaves(state.ema[name]), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  evaluated = states.model_to_evaluate(state)
  assert evaluated.params is state.ema['params'] and evaluated.batch_stats is state.ema[
      'batch_stats']
  plain = states.create_train_state(tiny_config(), 1)[0]  # no EMA: the weights themselves
  assert states.model_to_evaluate(plain).params is plain.params
  assert states.model_to_evaluate(plain).batch_stats is plain.batch_stats


@pytest.mark.parametrize('cost', [None, {}, [], [{'flops': 0.0}]])
def test_a_backend_without_a_count_gives_no_flops(cost):
  assert flops._flops(cost) is None
  assert flops._flops([{'flops': 5.0}]) == flops._flops({'flops': 5.0}) == 5.0

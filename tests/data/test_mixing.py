import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cifar100_flax.data import mixing


def _config(**on):
  return ml_collections.ConfigDict({**dict(mixup_alpha=0.0, cutmix_alpha=0.0,
                                           cutmix_switch_prob=0.5, mix_prob=1.0), **on})


def _batch(n=8, classes=10):
  images = jax.random.uniform(jax.random.PRNGKey(0), (n, 16, 16, 3))
  targets = jax.nn.one_hot(jnp.arange(n) % classes, classes)
  return images, targets


def test_mixup_of_an_image_with_itself_is_the_image():
  image = _batch()[0]
  for weight in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(mixing.mixup(image, image, jnp.float32(weight)), image, rtol=1e-6)


@pytest.mark.parametrize('on', [dict(mixup_alpha=0.4), dict(cutmix_alpha=1.0),
                                dict(mixup_alpha=0.4, cutmix_alpha=1.0)])
def test_mixed_targets_are_distributions_and_mixing_is_deterministic_per_key(on):
  images, targets = _batch()
  key = jax.random.PRNGKey(5)
  mixed, mixed_targets = mixing.mix_batch(images, targets, key, _config(**on))
  np.testing.assert_allclose(mixed_targets.sum(axis=1), 1, rtol=1e-6)
  assert (np.asarray(mixed_targets) >= 0).all()
  again = mixing.mix_batch(images, targets, key, _config(**on))
  np.testing.assert_array_equal(mixed, again[0])
  np.testing.assert_array_equal(mixed_targets, again[1])
  assert not np.allclose(mixed, images)


def test_mixup_mixes_images_and_labels_with_the_same_weight():
  images, targets = _batch()
  mixed, mixed_targets = mixing.mix_batch(images, targets, jax.random.PRNGKey(1),
                                          _config(mixup_alpha=0.4))
  weight = float(mixed_targets[0, 0])  # image 0 is class 0, its partner (image 7) class 7
  assert 0 < weight < 1 and float(mixed_targets[0, 7]) == pytest.approx(1 - weight, abs=1e-6)
  np.testing.assert_allclose(mixed[0], weight * images[0] + (1 - weight) * images[7], atol=1e-6)


def test_cutmix_label_weight_equals_the_area_kept():
  images, targets = _batch()
  for seed in range(5):
    mixed, mixed_targets = mixing.mix_batch(images, targets, jax.random.PRNGKey(seed),
                                            _config(cutmix_alpha=1.0))
    pasted = np.asarray((mixed[0] == images[7]).all(axis=-1) & (mixed[0] != images[0]).any(-1))
    assert float(mixed_targets[0, 7]) == pytest.approx(pasted.mean(), abs=1e-6)
    assert float(mixed_targets[0, 0]) == pytest.approx(1 - pasted.mean(), abs=1e-6)
    rows, cols = np.nonzero(pasted)
    if len(rows):  # one rectangle
      assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)


def test_mix_prob_zero_leaves_the_batch_alone():
  images, targets = _batch()
  mixed, mixed_targets = mixing.mix_batch(images, targets, jax.random.PRNGKey(0),
                                          _config(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.0))
  np.testing.assert_array_equal(mixed, images)
  np.testing.assert_array_equal(mixed_targets, targets)

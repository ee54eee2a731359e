import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cifar100_flax import augment

OFF = dict(crop_padding=0, crop_reflect=False, flip=False, alternating_flip=False,
           rotation_degrees=0.0, zoom=0.0, shear_degrees=0.0, cutout_size=0)


def _config(**on) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**OFF, **on})


def _images(n=8):
  return jax.random.uniform(jax.random.PRNGKey(0), (n, 32, 32, 3), minval=0, maxval=255)


ALL_ON = _config(crop_padding=4, flip=True, rotation_degrees=15.0, zoom=0.1, shear_degrees=10.0)


def test_deterministic_per_key_and_changes_images():
  images, key = _images(), jax.random.PRNGKey(1)
  a = augment.augment(images, key, ALL_ON)
  np.testing.assert_array_equal(a, augment.augment(images, key, ALL_ON))
  assert a.shape == images.shape
  assert not np.allclose(a, images)
  assert not np.allclose(a, augment.augment(images, jax.random.PRNGKey(2), ALL_ON))


def test_everything_off_is_identity():
  images = _images()
  np.testing.assert_array_equal(augment.augment(images, jax.random.PRNGKey(0), _config()), images)


def test_flip_mirrors_some_images_and_keeps_others():
  images = _images(32)
  out = augment.augment(images, jax.random.PRNGKey(0), _config(flip=True))
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  kept = [np.array_equal(o, i) for o, i in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_alternating_flip_mirrors_exactly_the_images_it_is_told_to():
  images, flips = _images(6), np.array([True, False, False, True, True, False])
  out = augment.augment(images, jax.random.PRNGKey(0), _config(flip=True, alternating_flip=True),
                        flips)
  np.testing.assert_array_equal(out, np.where(flips[:, None, None, None], images[:, :, ::-1],
                                              images))


@pytest.mark.parametrize('reflect,mode', [(False, 'constant'), (True, 'reflect')])
def test_crop_is_a_shift_of_the_padded_image(reflect, mode):
  images = _images(16)
  out = np.asarray(augment.augment(images, jax.random.PRNGKey(0),
                                   _config(crop_padding=4, crop_reflect=reflect)))
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)), mode=mode)
  shifts = [[np.array_equal(o, p[dy:dy + 32, dx:dx + 32]) for dy in range(9) for dx in range(9)]
            for o, p in zip(out, padded)]
  assert all(any(s) for s in shifts)
  assert sum(s[4 * 9 + 4] for s in shifts) < len(shifts)  # not all left in place


def test_rotation_by_small_angle_keeps_the_centre():
  image = jnp.zeros((1, 32, 32, 3)).at[:, 14:18, 14:18].set(255.0)
  out = augment.augment(image, jax.random.PRNGKey(0), _config(rotation_degrees=5.0))
  assert out[0, 15:17, 15:17].min() > 200  # the central blob stays put
  assert not np.allclose(out, image)


def test_cutout_zeroes_one_square_per_image():
  images = jnp.ones((64, 32, 32, 3))
  out = np.asarray(augment.cutout(images, jax.random.PRNGKey(0), 8))
  zeros = (out[..., 0] == 0).sum(axis=(1, 2))
  assert zeros.max() == 64 and (zeros > 0).all()  # 8x8 when inside, clipped at the borders
  np.testing.assert_array_equal(out, augment.cutout(images, jax.random.PRNGKey(0), 8))

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from cifar100_flax.data import augment, autoaugment

OFF = dict(crop_padding=0, crop_reflect=False, flip=False, alternating_flip=False,
           rotation_degrees=0.0, zoom=0.0, shear_degrees=0.0, cutout_size=0, auto_augment='',
           rand_augment_ops=2, rand_augment_magnitude=0.3)


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


@pytest.mark.parametrize('policy', ['rand', 'trivial'])
def test_auto_augment_is_deterministic_per_key_and_draws_per_image(policy):
  images, key = _images(16), jax.random.PRNGKey(3)
  config = _config(auto_augment=policy)
  out = augment.augment(images, key, config)
  np.testing.assert_array_equal(out, augment.augment(images, key, config))
  assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 255
  changed = [not np.allclose(o, i) for o, i in zip(out, images)]
  assert sum(changed) >= 8  # each image draws its own ops; few draw the identity
  assert not np.allclose(out, augment.augment(images, jax.random.PRNGKey(4), config))


def _op(name, wide=False):
  names = ['identity', 'auto_contrast', 'equalize', 'rotate', 'shear_x', 'shear_y',
           'translate_x', 'translate_y', 'color', 'contrast', 'brightness', 'sharpness',
           'posterize', 'solarize']
  assert len(names) == autoaugment.NUM_OPS
  return autoaugment._ops(wide)[names.index(name)]


def _pil(image):
  return Image.fromarray(np.asarray(image).astype(np.uint8))


@pytest.mark.parametrize('name,strength,reference', [
    ('auto_contrast', 0.0, ImageOps.autocontrast),
    ('equalize', 0.0, ImageOps.equalize),
    ('posterize', 1.0, lambda im: ImageOps.posterize(im, 4)),
    ('solarize', 0.5, lambda im: ImageOps.solarize(im, 127.5)),
    ('brightness', 0.5, lambda im: ImageEnhance.Brightness(im).enhance(1.45)),
    ('contrast', 0.5, lambda im: ImageEnhance.Contrast(im).enhance(1.45)),
    ('color', -0.5, lambda im: ImageEnhance.Color(im).enhance(0.55)),
    ('sharpness', 1.0, lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
])
def test_colour_ops_match_pil(name, strength, reference):
  rng = np.random.default_rng(0)
  image = rng.integers(30, 220, (32, 32, 3)).astype(np.float32)
  out = np.asarray(_op(name)(jnp.asarray(image), jnp.float32(strength)))
  expected = np.asarray(reference(_pil(image)), np.float32)
  # PIL rounds each result to uint8 (and Color's grey differs by rounding): within 1.5 levels.
  np.testing.assert_allclose(out, expected, atol=1.5)


def test_translate_moves_the_image_by_its_fraction_of_the_side():
  image = _images(1)[0]
  out = np.asarray(_op('translate_x', wide=True)(image, jnp.float32(0.25)))  # 8 of 32 columns
  np.testing.assert_array_equal(out[:, :24], np.asarray(image)[:, 8:])
  assert not out[:, 24:].any()


def test_random_erasing_fills_a_rectangle_with_noise_at_its_rate():
  images = jnp.zeros((400, 32, 32, 3))
  out = np.asarray(augment.random_erasing(images, jax.random.PRNGKey(0), 0.5))
  erased = out.any(axis=(1, 2, 3))
  assert 0.4 < erased.mean() < 0.6
  for image in out[erased][:20]:
    rows, cols = np.nonzero(image.any(axis=2))
    # The noise covers one axis-aligned rectangle of 2% to 1/3 of the image.
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert len(rows) == height * width
    assert 0.015 * 1024 <= height * width <= 1024 / 3 + 32
  np.testing.assert_array_equal(out, augment.random_erasing(images, jax.random.PRNGKey(0), 0.5))
  np.testing.assert_array_equal(augment.random_erasing(images, jax.random.PRNGKey(0), 0.0), 0)

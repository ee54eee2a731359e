"""Random augmentation of a batch on the device, inside the jitted training step.

Each image gets its own key split from the step's key, so a batch's augmentation is a pure
function of (images, key). Image maths comes from dm-pix; Cutout and Random Erasing are written
here because dm-pix has neither. RandAugment and TrivialAugment live in autoaugment.py, MixUp and
CutMix (which act on whole batches and their labels) in mixing.py.
"""

import math

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

from cifar100_flax.data import autoaugment, cifar100
from cifar100_flax.errors import require, require_non_negative


def _random_affine(key: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """A random 2x2 map from output to input (row, col) offsets from the image centre."""
  k_rot, k_zoom, k_shear = jax.random.split(key, 3)
  angle = math.radians(config.rotation_degrees) * jax.random.uniform(k_rot, minval=-1, maxval=1)
  zoom = 1 + config.zoom * jax.random.uniform(k_zoom, minval=-1, maxval=1)
  shear = math.radians(config.shear_degrees) * jax.random.uniform(k_shear, minval=-1, maxval=1)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotation = jnp.array([[cos, -sin], [sin, cos]])
  shearing = jnp.array([[1.0, 0.0], [jnp.tan(shear), 1.0]])
  # Output coordinates are mapped back to input ones, so zooming in divides by the zoom.
  return rotation @ shearing / zoom


def _affine(image: jax.Array, key: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  spatial = _random_affine(key, config)
  centre = (jnp.array(image.shape[:2], jnp.float32) - 1) / 2
  matrix = jnp.eye(3).at[:2, :2].set(spatial)
  offset = jnp.zeros(3).at[:2].set(centre - spatial @ centre)
  return pix.affine_transform(image, matrix, offset=offset, order=1, mode='constant', cval=0.0)


def _augment_one(image: jax.Array, key: jax.Array, flip: jax.Array,
                 config: ml_collections.ConfigDict) -> jax.Array:
  k_crop, k_flip, k_affine, k_policy = jax.random.split(key, 4)
  if config.crop_padding:
    p = config.crop_padding
    mode = 'reflect' if config.crop_reflect else 'constant'
    padded = jnp.pad(image, ((p, p), (p, p), (0, 0)), mode=mode)
    image = pix.random_crop(k_crop, padded, image.shape)
  if config.flip and config.alternating_flip:
    image = jnp.where(flip, image[:, ::-1], image)
  elif config.flip:
    image = pix.random_flip_left_right(k_flip, image)
  if config.rotation_degrees or config.zoom or config.shear_degrees:
    image = _affine(image, k_affine, config)
  if config.auto_augment == 'trivial':
    image = autoaugment.trivial_augment(image, k_policy)
  elif config.auto_augment == 'rand':
    image = autoaugment.rand_augment(image, k_policy, config.rand_augment_ops,
                                     config.rand_augment_magnitude)
  return image


def cutout(images: jax.Array, key: jax.Array, size: int) -> jax.Array:
  """Zeroes one size x size square per image, centred uniformly (DeVries & Taylor, 2017).

  As in the paper, the square may stick out of the image. Apply after normalisation so that
  zero is the mean colour.
  """
  batch, height, width = images.shape[:3]
  k_row, k_col = jax.random.split(key)
  rows = jax.random.randint(k_row, (batch, 1, 1), 0, height)
  cols = jax.random.randint(k_col, (batch, 1, 1), 0, width)
  def within(index, centre):
    return (index - centre >= -(size // 2)) & (index - centre < size - size // 2)
  inside = within(jnp.arange(height)[None, :, None], rows) & within(
      jnp.arange(width)[None, None, :], cols)
  return jnp.where(inside[..., None], 0, images).astype(images.dtype)


def random_erasing(images: jax.Array, key: jax.Array, probability: float) -> jax.Array:
  """Random Erasing (Zhong et al., 2020) as timm's 'pixel' mode: with `probability`, a rectangle
  of 2% to 1/3 of the image, aspect ratio 0.3 to 3.3 (log-uniform), is replaced by per-pixel
  standard normal noise. Apply after normalisation, where the noise has the data's scale.

  Where timm redraws a rectangle that does not fit (up to 10 times), it is clipped here.
  """
  batch, height, width, channels = images.shape
  k_apply, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)
  area = jax.random.uniform(k_area, (batch,), minval=0.02, maxval=1 / 3) * height * width
  ratio = jnp.exp(jax.random.uniform(k_ratio, (batch,), minval=math.log(0.3),
                                     maxval=math.log(1 / 0.3)))
  box_h = jnp.minimum(jnp.round(jnp.sqrt(area * ratio)), height)
  box_w = jnp.minimum(jnp.round(jnp.sqrt(area / ratio)), width)
  top = jnp.floor(jax.random.uniform(k_top, (batch,)) * (height - box_h + 1))
  left = jnp.floor(jax.random.uniform(k_left, (batch,)) * (width - box_w + 1))
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
            & jax.random.bernoulli(k_apply, probability, (batch, 1, 1)))
  noise = jax.random.normal(k_noise, (batch, height, width, channels), images.dtype)
  return jnp.where(inside[..., None], noise, images)


def augment(images: jax.Array, key: jax.Array, config: ml_collections.ConfigDict,
            flips: jax.Array | None = None) -> jax.Array:
  """Crop/shift, flip, affine (rotation, zoom, shear) and RandAugment or TrivialAugment on
  float images [B, H, W, C] in [0, 255].

  With config.alternating_flip, `flips` ([B] bools, the input pipeline's) says which to mirror.
  """
  if config.flip and config.alternating_flip and flips is None:
    raise ValueError('alternating_flip needs the batch\'s flips')
  keys = jax.random.split(key, images.shape[0])
  flips = jnp.zeros(images.shape[0], bool) if flips is None else flips
  return jax.vmap(_augment_one, in_axes=(0, 0, 0, None))(images, keys, flips, config)


AUTO_AUGMENTS = ('', 'rand', 'trivial')
_SIDE = cifar100.IMAGE_SHAPE[0]  # augmentation acts on CIFAR's own images, before any resizing
_PROBABILITIES = ('rand_augment_magnitude', 'random_erasing', 'cutmix_switch_prob', 'mix_prob')


def check_config(augment: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `config.augment` value that cannot work."""
  require(augment.auto_augment in AUTO_AUGMENTS,
          f'config.augment.auto_augment={augment.auto_augment!r} is unknown; choose one of '
          f'{list(AUTO_AUGMENTS)}')
  require_non_negative(augment, 'config.augment',
                       tuple(key for key in augment if key != 'auto_augment'))
  for key in _PROBABILITIES:
    require(augment[key] <= 1, f'config.augment.{key} must be in [0, 1], got {augment[key]}')
  require(augment.rand_augment_ops <= autoaugment.NUM_OPS, f'config.augment.rand_augment_ops must '
          f'be at most {autoaugment.NUM_OPS}, the kinds of operation (each is a switch over all of '
          f'them, compiled into the training step: more only repeat kinds, and compile for '
          f'minutes), got {augment.rand_augment_ops}')
  for key in ('crop_padding', 'cutout_size'):
    require(augment[key] <= _SIDE, f'config.augment.{key} must be at most {_SIDE} (the side of '
            f'the images it acts on, before any resizing: a larger one leaves crops, or images, '
            f'with nothing of the picture), got {augment[key]}')
  require(augment.zoom < 1, f'config.augment.zoom must be < 1 (the scale is drawn from [1 - zoom, '
          f'1 + zoom]: from 1 on it reaches 0, and the image vanishes), got {augment.zoom}')
  require(augment.shear_degrees < 90, f'config.augment.shear_degrees must be < 90 (the shear is '
          f'its tangent, infinite at 90), got {augment.shear_degrees}')

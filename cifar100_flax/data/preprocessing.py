"""Images as the model sees them: uint8 batches to normalised floats, augmented (with the step's
key) in training, resized to the side the config and the epoch ask for."""


import jax
import jax.numpy as jnp
import ml_collections

from cifar100_flax.data import augment, cifar100


def eval_image_size(config: ml_collections.ConfigDict) -> int:
  """The side images are evaluated at (0: CIFAR's own)."""
  return config.eval.image_size or config.data.image_size


def train_image_size(config: ml_collections.ConfigDict, epoch: float) -> int:
  """The side training images have at `epoch` (0: CIFAR's own): config.data.image_size, or the size
  config.data.image_size_schedule gives from the last of its start epochs at or before `epoch`."""
  sizes = [size for start, size in config.data.image_size_schedule if start <= epoch]
  return sizes[-1] if sizes else config.data.image_size


def preprocess(images: jax.Array, config: ml_collections.ConfigDict,
               key: jax.Array | None = None, flips: jax.Array | None = None,
               size: int | None = None) -> jax.Array:
  """uint8 images -> normalised float images. With a key, as training sees them: augmented, at
  `size` (default config.data.image_size; `flips`: the input pipeline's alternating flips); without,
  as evaluation does, at eval_image_size(config)."""
  images = images.astype(jnp.float32)
  if key is not None:
    augment_key, cutout_key, erasing_key = jax.random.split(key, 3)
    images = augment.augment(images, augment_key, config.augment, flips)
  mean, stddev = cifar100.NORMALISATIONS[config.data.normalisation]
  images = (images - jnp.array(mean)) / jnp.array(stddev)
  if key is not None and config.augment.cutout_size:
    images = augment.cutout(images, cutout_key, config.augment.cutout_size)
  if key is not None and config.augment.random_erasing:
    images = augment.random_erasing(images, erasing_key, config.augment.random_erasing)
  if key is None:
    size = eval_image_size(config)
  elif size is None:
    size = config.data.image_size
  if size and size != images.shape[1]:
    # Pretrained backbones see objects at their own scale (upsampled on the device); low
    # resolution makes early epochs cheap (config.data.image_size_schedule).
    images = resize(images, size)
  return images


def resize(images: jax.Array, size: int) -> jax.Array:
  """[B, H, W, C] images bilinearly resized to [B, size, size, C].

  What jax.image.resize(..., 'bilinear') computes, called as the scale-and-translate it delegates
  to: ONNX converters replace jax.image.resize by a Resize op that needs a fixed batch size.
  """
  scale = jnp.array([size / images.shape[1], size / images.shape[2]], jnp.float32)
  return jax.image.scale_and_translate(images, (images.shape[0], size, size, images.shape[3]),
                                       (1, 2), scale, jnp.zeros(2, jnp.float32), 'linear')

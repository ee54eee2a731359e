"""RandAugment (Cubuk et al., 2020) and TrivialAugment (Müller & Hutter, 2021) on the device.

Each image draws its own operations and strengths from its own key. The op list and strength
ranges follow torchvision's `RandAugment` and `TrivialAugmentWide` (Equalize, AutoContrast, Color,
Contrast, Brightness, Sharpness, Posterize, Solarize, Rotate, ShearX/Y, TranslateX/Y, Identity).
No maintained JAX library implements these policies (dm-pix has the colour and geometry
primitives, used where they match; augmax is unmaintained since 2022), so the policies, Equalize,
AutoContrast, Posterize and the PIL-style blends are written here.

Images are float [H, W, C] in [0, 255], as `augment.augment` hands them on.
"""

import math
from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

# Strength ranges at magnitude 1: (RandAugment's, TrivialAugmentWide's).
_RANGES = {
    'rotate_degrees': (30.0, 135.0),
    'shear': (0.3, 0.99),
    'translate_fraction': (0.45, 1.0),  # torchvision: 150/331 of the side, and 32 pixels of 32
    'enhance': (0.9, 0.99),  # Color, Contrast, Brightness, Sharpness factors 1 +- this
    'posterize_bits': (4, 6),  # bits removed
}


def _blend(image: jax.Array, degenerate: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL's ImageEnhance: degenerate + factor * (image - degenerate), clipped."""
  return jnp.clip(degenerate + factor * (image - degenerate), 0, 255)


def _grey(image: jax.Array) -> jax.Array:
  return pix.rgb_to_grayscale(image / 255, keep_dims=True) * 255


def _auto_contrast(image: jax.Array) -> jax.Array:
  low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
  scale = jnp.where(high > low, 255 / jnp.maximum(high - low, 1e-6), 1.0)
  return jnp.where(high > low, jnp.clip((image - low) * scale, 0, 255), image)


def _equalize_channel(channel: jax.Array) -> jax.Array:
  # PIL's rule: a lookup table from the cumulative histogram, the last level's count left out.
  levels = jnp.clip(channel, 0, 255).astype(jnp.int32)
  histogram = jnp.bincount(levels.ravel(), length=256)
  last = histogram[jnp.max(jnp.where(histogram > 0, jnp.arange(256), 0))]
  step = (histogram.sum() - last) // 255
  lut = jnp.clip((jnp.cumsum(histogram) - histogram + step // 2) // jnp.maximum(step, 1), 0, 255)
  return jnp.where(step > 0, lut[levels].astype(channel.dtype), channel)


def _equalize(image: jax.Array) -> jax.Array:
  return jax.vmap(_equalize_channel, in_axes=2, out_axes=2)(image)


def _sharpness_degenerate(image: jax.Array) -> jax.Array:
  # PIL's SMOOTH filter (centre 5, neighbours 1, over 13), the border pixels left as they are.
  kernel = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13
  padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode='edge')
  height, width = image.shape[:2]
  smooth = sum(kernel[i, j] * padded[i:i + height, j:j + width] for i in range(3) for j in range(3))
  interior = jnp.zeros(image.shape[:2], bool).at[1:-1, 1:-1].set(True)[..., None]
  return jnp.where(interior, smooth, image)


def _warp(image: jax.Array, matrix: jax.Array, translation: jax.Array) -> jax.Array:
  """The image at input coordinates matrix @ (out - centre) + centre + translation, black outside
  (torchvision's fill of 0), nearest neighbour as torchvision's default."""
  centre = (jnp.array(image.shape[:2], jnp.float32) - 1) / 2
  full = jnp.eye(3).at[:2, :2].set(matrix)
  offset = jnp.zeros(3).at[:2].set(centre - matrix @ centre + translation)
  return pix.affine_transform(image, full, offset=offset, order=0, mode='constant', cval=0.0)


def _ops(wide: bool) -> list[Callable[[jax.Array, jax.Array], jax.Array]]:
  """The operations as functions of (image, signed strength in [-1, 1])."""
  r = {name: ranges[int(wide)] for name, ranges in _RANGES.items()}

  def rotate(x, s):
    angle = math.radians(r['rotate_degrees']) * s
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return _warp(x, jnp.array([[cos, -sin], [sin, cos]]), jnp.zeros(2))

  def shear(axis):
    def op(x, s):
      # Rows (axis 0) shift along columns for ShearX, and columns along rows for ShearY.
      matrix = jnp.eye(2).at[1 - axis, axis].set(r['shear'] * s)
      return _warp(x, matrix, jnp.zeros(2))
    return op

  def translate(axis):
    def op(x, s):
      return _warp(x, jnp.eye(2), jnp.zeros(2).at[axis].set(
          r['translate_fraction'] * x.shape[axis] * s))
    return op

  def enhance(degenerate):
    return lambda x, s: _blend(x, degenerate(x), 1 + r['enhance'] * s)

  def posterize(x, s):
    bits = 8 - jnp.round(r['posterize_bits'] * jnp.abs(s))
    unit = 2 ** (8 - bits)
    return jnp.floor(jnp.clip(x, 0, 255) / unit) * unit

  def solarize(x, s):
    threshold = 255 * (1 - jnp.abs(s))
    return jnp.where(x >= threshold, 255 - x, x)

  return [
      lambda x, s: x,  # Identity
      lambda x, s: _auto_contrast(x),
      lambda x, s: _equalize(x),
      rotate, shear(1), shear(0), translate(1), translate(0),
      enhance(lambda x: jnp.broadcast_to(_grey(x), x.shape)),  # Color
      enhance(lambda x: jnp.full_like(x, _grey(x).mean())),  # Contrast
      enhance(jnp.zeros_like),  # Brightness
      enhance(_sharpness_degenerate),  # Sharpness
      posterize, solarize,
  ]


NUM_OPS = len(_ops(False))


def _apply_one(image: jax.Array, key: jax.Array, wide: bool, op_index: jax.Array,
               strength: jax.Array) -> jax.Array:
  sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
  return jax.lax.switch(op_index, _ops(wide), image, sign * strength)


def rand_augment(image: jax.Array, key: jax.Array, num_ops: int, magnitude: float) -> jax.Array:
  """`num_ops` operations drawn uniformly (with repetition), each at `magnitude` in [0, 1] of its
  range (torchvision's magnitude 9 of 31 bins is 0.3) with a random sign."""
  for op_key in jax.random.split(key, num_ops):
    k_op, k_sign = jax.random.split(op_key)
    op_index = jax.random.randint(k_op, (), 0, NUM_OPS)
    image = _apply_one(image, k_sign, False, op_index, jnp.float32(magnitude))
  return image


def trivial_augment(image: jax.Array, key: jax.Array) -> jax.Array:
  """One operation drawn uniformly, at a strength uniform in [0, 1] of the wide ranges."""
  k_op, k_strength, k_sign = jax.random.split(key, 3)
  op_index = jax.random.randint(k_op, (), 0, NUM_OPS)
  # torchvision draws one of 31 magnitude bins, 0 to 30.
  strength = jax.random.randint(k_strength, (), 0, 31) / 30
  return _apply_one(image, k_sign, True, op_index, strength)

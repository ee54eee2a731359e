"""MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) of a batch, with its soft targets.

As timm's batch mode does, the batch is mixed with itself in reverse order and one mixing weight
is drawn per batch; with both on, each batch is CutMix with probability `cutmix_switch_prob`.
No maintained JAX library mixes batches (optax, dm-pix and flax have none), hence this module.
"""

import jax
import jax.numpy as jnp
import ml_collections


def mixup(images: jax.Array, others: jax.Array, weight: jax.Array) -> jax.Array:
  """weight * images + (1 - weight) * others."""
  return weight * images + (1 - weight) * others


def cutmix_box(key: jax.Array, height: int, width: int, weight: jax.Array) -> jax.Array:
  """A [height, width] mask, True inside a box of about (1 - weight) of the area, centred
  uniformly and clipped to the image."""
  k_row, k_col = jax.random.split(key)
  cut = jnp.sqrt(1 - weight)
  box_h, box_w = jnp.round(height * cut), jnp.round(width * cut)
  centre_row = jax.random.randint(k_row, (), 0, height)
  centre_col = jax.random.randint(k_col, (), 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  top, left = centre_row - box_h // 2, centre_col - box_w // 2
  return (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)


def cutmix(images: jax.Array, others: jax.Array, box: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`images` with `others` pasted inside `box`, and the weight left to `images` (the area
  outside the box)."""
  return jnp.where(box[None, :, :, None], others, images), 1 - box.mean()


def mix_batch(images: jax.Array, targets: jax.Array, key: jax.Array,
              config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """MixUp or CutMix of `images` [B, H, W, C] and their `targets` [B, classes] (config.augment's
  mixup_alpha, cutmix_alpha, mix_prob, cutmix_switch_prob); targets stay distributions."""
  k_apply, k_switch, k_weight, k_box = jax.random.split(key, 4)
  others, other_targets = images[::-1], targets[::-1]
  mixed, weight = images, jnp.float32(1.0)
  if config.mixup_alpha:
    weight = jax.random.beta(k_weight, config.mixup_alpha, config.mixup_alpha)
    mixed = mixup(images, others, weight)
  if config.cutmix_alpha:
    cut_weight = jax.random.beta(k_weight, config.cutmix_alpha, config.cutmix_alpha)
    cut, cut_weight = cutmix(images, others, cutmix_box(k_box, *images.shape[1:3], cut_weight))
    use_cut = (jax.random.uniform(k_switch) < config.cutmix_switch_prob
               if config.mixup_alpha else True)
    mixed = jnp.where(use_cut, cut, mixed)
    weight = jnp.where(use_cut, cut_weight, weight)
  apply = jax.random.uniform(k_apply) < config.mix_prob
  weight = jnp.where(apply, weight, 1.0)
  mixed = jnp.where(apply, mixed, images)
  return mixed.astype(images.dtype), mixup(targets, other_targets, weight)

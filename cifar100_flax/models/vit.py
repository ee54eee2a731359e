"""Vision Transformer (Dosovitskiy et al., 2021) in timm's layout: ViT-Ti/S/B, patch 16.

Module and parameter names follow timm's `VisionTransformer` state-dict keys (`blocks.3.attn.qkv`
is `blocks_3/attn/qkv`; only the classifier `head` is the project's `fc`), so timm's checkpoints
convert one to one (pretrained.convert_vit). As in timm: a class token read out after the final
LayerNorm, learned position embeddings for it and every patch, pre-norm blocks, LayerNorm epsilon
1e-6, exact (erf) GELU. The position embeddings are sized for the input the model is initialised
on; pretrained.resize_position_embedding fits a checkpoint's to another size.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.models.layer_set import FLAX, LayerSet

# name -> (width, depth, heads), timm's vit_{tiny,small,base}_patch16_*.
VARIANTS = {'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12)}
_LayerNorm = lambda name: nn.LayerNorm(epsilon=1e-6, name=name)


class Attention(nn.Module):
  heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, tokens, width = x.shape
    qkv = nn.Dense(3 * width, dtype=self.dtype, name='qkv')(x)
    # timm's order of the 3 * width outputs: (q, k, v) x heads x head width.
    q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.heads, width // self.heads), 2, 0)
    x = jax.nn.dot_product_attention(q, k, v).reshape(batch, tokens, width)
    return nn.Dense(width, dtype=self.dtype, name='proj')(x)


class Mlp(nn.Module):
  hidden: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name='fc1')(x), approximate=False)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name='fc2')(y)


class Block(nn.Module):
  heads: int
  mlp_ratio: float
  drop_path: float  # probability of dropping each residual branch (stochastic depth)
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    drop = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
    x = x + drop(Attention(self.heads, self.dtype, name='attn')(_LayerNorm('norm1')(x)))
    hidden = int(x.shape[-1] * self.mlp_ratio)
    return x + drop(Mlp(hidden, self.dtype, name='mlp')(_LayerNorm('norm2')(x)))


class PatchEmbed(nn.Module):
  width: int
  patch_size: int
  dtype: Any
  layers: LayerSet

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.layers.conv(self.width, (self.patch_size,) * 2, self.patch_size, padding='VALID',
                  dtype=self.dtype, name='proj')(x)
    return x.reshape(x.shape[0], -1, self.width)  # row-major patches, as timm's flatten(2)


class VisionTransformer(nn.Module):
  num_classes: int
  variant: str = 'tiny'
  patch_size: int = 16
  mlp_ratio: float = 4.0
  dropout: float = 0.0  # before the classifier
  drop_path: float = 0.1  # stochastic depth of the last block (linear in depth from 0)
  # Overrides of the variant's (width, depth, heads), e.g. a tiny test model (0: the variant's).
  width: int = 0
  depth: int = 0
  heads: int = 0
  dtype: Any = jnp.float32
  layers: LayerSet = FLAX  # layer_set.FLAX or layer_set.cpu(...)

  def sizes(self) -> tuple[int, int, int]:
    """(width, depth, heads): the variant's, or the overrides given."""
    return tuple(given or default for given, default in
                 zip((self.width, self.depth, self.heads), VARIANTS[self.variant]))

  @property
  def gradcam_layer(self) -> str:
    """Grad-CAM's default layer: the last block's first LayerNorm, the last point where patch
    tokens still reach the class token (through attention), as pytorch-grad-cam advises."""
    return f'blocks_{self.sizes()[1] - 1}/norm1'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width, depth, heads = self.sizes()
    x = PatchEmbed(width, self.patch_size, self.dtype, self.layers, name='patch_embed')(
        x.astype(self.dtype))
    cls_token = self.param('cls_token', nn.initializers.zeros, (1, 1, width))
    x = jnp.concatenate([jnp.broadcast_to(cls_token, (x.shape[0], 1, width)).astype(x.dtype), x],
                        axis=1)
    pos_embed = self.param('pos_embed', nn.initializers.normal(0.02), (1,) + x.shape[1:])
    x = x + pos_embed.astype(x.dtype)
    for index in range(depth):
      x = Block(heads, self.mlp_ratio, self.drop_path * index / max(depth - 1, 1), self.dtype,
                name=f'blocks_{index}')(x, train)
    x = _LayerNorm('norm')(x)[:, 0]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='fc')(x).astype(jnp.float32)

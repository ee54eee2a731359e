"""Grad-CAM (Selvaraju et al., 2017) for any of the project's Flax models, in JAX.

The feature map is the output of one submodule, named by its path ('/'-joined, e.g. 'layer4_2'
for a ResNet's last block); by default the last submodule whose output is an image-shaped
[N, H, W, C] map with H, W > 1, i.e. the last convolutional block. A Vision Transformer's tokens
[N, (1 +) g * g, C] count as the g x g map of their patches (a class token left out); its model
names the layer to use (`gradcam_layer`: after its last block, patch tokens no longer reach the
class token, so their gradients are zero). The gradient with respect to
that map is taken through a zero perturbation added to it by `nn.intercept_methods`, so no model
needs a hook of its own. No maintained JAX library offers Grad-CAM, hence this module.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar100_flax.errors import UsageError


def _path(module: nn.Module) -> str:
  return '/'.join(module.path)


def _patch_tokens(tokens: int) -> int:
  """How many of a sequence's tokens are a square grid of patches: all, or all but a class token
  in front (0 if neither)."""
  for patches in (tokens, tokens - 1):
    if round(patches ** 0.5) ** 2 == patches:
      return patches
  return 0


def _map_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
  """[N, H, W, C] of an image map or of a sequence of patch tokens; else None."""
  if len(shape) == 3:
    grid = round(_patch_tokens(shape[1]) ** 0.5)
    shape = (shape[0], grid, grid, shape[2])
  return shape if len(shape) == 4 and min(shape[1:3]) > 1 else None


def _as_map(x: jax.Array) -> jax.Array:
  if x.ndim == 4:
    return x
  return x[:, x.shape[1] - _patch_tokens(x.shape[1]):].reshape(_map_shape(x.shape))


def _is_feature_map(value: Any) -> bool:
  return isinstance(value, jax.Array) and _map_shape(value.shape) is not None


def _outputs(apply: Callable[[jax.Array], jax.Array], images: jax.Array) -> list[tuple[str, Any]]:
  """(path, abstract output) of every submodule call, in call order."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.path:
      calls.append((_path(context.module), out))
    return out

  with nn.intercept_methods(record):
    # A new function each time: with `apply` itself, JAX's trace cache would skip `record`.
    jax.eval_shape(lambda x: apply(x), images)
  return calls


def _submodules(apply: Callable[[jax.Array], jax.Array], images: jax.Array) -> set[str]:
  return {path for path, _ in _outputs(apply, images)}


def feature_maps(apply: Callable[[jax.Array], jax.Array], images: jax.Array) -> list[str]:
  """Paths of the submodules whose outputs are [N, H, W, C] maps (H, W > 1) or patch tokens, in
  call order."""
  return list(dict.fromkeys(path for path, out in _outputs(apply, images) if _is_feature_map(out)))


def _perturbed(apply: Callable, layer: str) -> Callable:
  """apply(images, perturbation) -> (logits, feature map), with perturbation added to `layer`'s
  output."""

  def forward(images, perturbation):
    captured = []

    def add(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == '__call__' and _path(context.module) == layer and not captured:
        out = out + perturbation
        captured.append(out)
      return out

    with nn.intercept_methods(add):
      logits = apply(images)
    return logits, captured[0]

  return forward


def grad_cam(apply: Callable[[jax.Array], jax.Array], images: jax.Array,
             classes: jax.Array | None = None, layer: str | None = None,
             size: tuple[int, int] | None = None) -> jax.Array:
  """[N, H, W] maps in [0, 1] of where `layer` saw evidence for `classes` (default: the predicted
  ones).

  apply: images -> logits (e.g. functools.partial(model.apply, variables, train=False)).
  size: the maps' size (default: the images').
  """
  candidates = feature_maps(apply, images)
  if layer is None:
    if not candidates:
      raise UsageError('the model has no [N, H, W, C] feature map larger than 1x1')
    layer = candidates[-1]
  elif layer not in _submodules(apply, images):
    raise UsageError(f'the model has no submodule {layer!r}; its feature maps are at '
                     f'{", ".join(candidates)}')
  forward = _perturbed(apply, layer)
  _, activation_shape = jax.eval_shape(lambda x: forward(x, 0.0), images)
  zeros = jnp.zeros(activation_shape.shape, activation_shape.dtype)
  logits, activations = forward(images, zeros)
  if classes is None:
    classes = jnp.argmax(logits, axis=-1)

  def score(perturbation):
    chosen_logits, _ = forward(images, perturbation)
    return jnp.sum(jnp.take_along_axis(chosen_logits, classes[:, None], axis=-1))

  gradients, activations = _as_map(jax.grad(score)(zeros)), _as_map(activations)
  weights = jnp.mean(gradients, axis=(1, 2), keepdims=True)  # per channel, per image
  cams = nn.relu(jnp.sum(weights * activations, axis=-1))
  height, width = size or images.shape[1:3]
  cams = jax.image.resize(cams, (cams.shape[0], height, width), 'bilinear')
  low = cams.min(axis=(1, 2), keepdims=True)
  high = cams.max(axis=(1, 2), keepdims=True)
  return jnp.where(high > low, (cams - low) / jnp.maximum(high - low, 1e-12), 0.0)

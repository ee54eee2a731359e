import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax import models
from cifar100_flax.evaluation import gradcam


class _ConvThenLinear(nn.Module):
  """Global average pooling then a linear head: Grad-CAM is then CAM, known in closed form."""

  @nn.compact
  def __call__(self, x, train=False):
    features = nn.Conv(4, (3, 3), name='features')(x)
    return nn.Dense(5, name='head')(features.mean(axis=(1, 2)))


def _images(n=3, size=8):
  return jax.random.normal(jax.random.key(0), (n, size, size, 3))


def test_grad_cam_equals_cam_in_closed_form():
  model, images = _ConvThenLinear(), _images()
  variables = model.init(jax.random.key(1), images)
  apply = functools.partial(model.apply, variables)
  classes = jnp.array([0, 3, 4])
  cams = gradcam.grad_cam(apply, images, classes)
  features = nn.Conv(4, (3, 3)).apply({'params': variables['params']['features']}, images)
  weights = variables['params']['head']['kernel'][:, classes].T  # [N, channels]
  expected = jax.nn.relu(jnp.einsum('nhwk,nk->nhw', features, weights))
  low, high = expected.min(axis=(1, 2), keepdims=True), expected.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(cams, (expected - low) / (high - low), atol=1e-5)


def test_default_layer_is_the_last_feature_map_and_maps_have_the_image_size():
  model = models.cnn.CNN(num_classes=100, widths=(8, 16), convs_per_stage=1, hidden=0, dropout=0.0)
  images = _images(n=4, size=32)
  variables = model.init(jax.random.key(1), images, train=False)
  apply = functools.partial(model.apply, variables, train=False)
  # Conv, BatchNorm (+ ReLU), 2x2 max-pooling, twice: the last map is the second BatchNorm's.
  assert gradcam.feature_maps(apply, images) == ['Conv_0', 'BatchNorm_0', 'Conv_1', 'BatchNorm_1']
  cams = gradcam.grad_cam(apply, images)
  assert cams.shape == (4, 32, 32)
  assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
  assert (cams.max(axis=(1, 2)) - cams.min(axis=(1, 2)) > 0.5).all()  # not constant
  np.testing.assert_allclose(cams, gradcam.grad_cam(apply, images, layer='BatchNorm_1'))
  assert not np.allclose(cams, gradcam.grad_cam(apply, images, layer='BatchNorm_0'))
  assert gradcam.grad_cam(apply, images, size=(16, 16)).shape == (4, 16, 16)


def test_an_unknown_layer_is_named_in_the_error():
  model, images = _ConvThenLinear(), _images()
  apply = functools.partial(model.apply, model.init(jax.random.key(1), images))
  with pytest.raises(ValueError, match="no submodule 'nope'; its feature maps are at features"):
    gradcam.grad_cam(apply, images, layer='nope')


def test_a_vit_explains_its_patch_tokens_at_its_last_attention():
  model = models.create_model('vit_tiny_patch16', 10, width=16, depth=2, heads=2)
  images = _images(n=2, size=64)  # 4 x 4 patches
  apply = functools.partial(model.apply, model.init(jax.random.key(1), images, train=False),
                            train=False)
  assert model.gradcam_layer == 'blocks_1/norm1'
  assert {'patch_embed', 'blocks_0', 'blocks_1/norm1', 'norm'} <= set(
      gradcam.feature_maps(apply, images))
  cams = gradcam.grad_cam(apply, images, layer=model.gradcam_layer)
  assert cams.shape == (2, 64, 64) and (cams.max(axis=(1, 2)) - cams.min(axis=(1, 2)) > 0.5).all()
  # After the last block only the class token reaches the logits: nothing to explain there.
  np.testing.assert_array_equal(gradcam.grad_cam(apply, images, layer='norm'), 0)

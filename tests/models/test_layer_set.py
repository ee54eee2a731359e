"""Flax's layers and the CPU path's build the same models: one checkpoint serves both."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar100_flax import models
from cifar100_flax.evaluation import evaluate
from cifar100_flax.inference import export
from cifar100_flax.models import layer_set
from cifar100_flax.training import loop, states
from tests.helpers import saved_steps, stop_after, tiny_config

TINY = {'cnn': dict(widths=(8, 8), convs_per_stage=1, hidden=16),
        'airbench': dict(widths=(8, 8, 8), convs_per_stage=1),
        'resnet18': dict(width=4, stem='cifar'),
        'resnet50': dict(width=2, stem='imagenet'),
        'efficientnet_lite0': {},
        'vit_tiny_patch16': dict(width=16, depth=1, heads=2)}
# Lite0 reduces 32-fold: at 16 px its last BatchNorms would see 4 values each, whose statistics
# amplify rounding differences through 16 blocks.
SIDES = {'efficientnet_lite0': 64}


@pytest.mark.parametrize('name', sorted(TINY))
def test_every_model_has_the_same_variables_and_function_with_either(name):
  build = functools.partial(models.create_model, name, 10, **TINY[name])
  flax_model, cpu_model = build(layers=layer_set.FLAX), build(layers=layer_set.cpu('xla'))
  side = SIDES.get(name, 16)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, side, side, 3))
  variables = flax_model.init(jax.random.PRNGKey(0), images, train=False)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(cpu_model.init(jax.random.PRNGKey(0), images, train=False)) == shapes(variables)
  for model in (flax_model, cpu_model):  # same function of the same variables
    assert model.apply(variables, images, train=False).shape == (4, 10)
  np.testing.assert_allclose(cpu_model.apply(variables, images, train=False),
                             flax_model.apply(variables, images, train=False), atol=2e-4)
  trained = [model.apply(variables, images, train=True, mutable=['batch_stats'],
                         rngs={'dropout': jax.random.PRNGKey(2)})
             for model in (flax_model, cpu_model)]
  np.testing.assert_allclose(trained[1][0], trained[0][0], atol=2e-4)
  for ours, theirs in zip(jax.tree.leaves(trained[1][1]), jax.tree.leaves(trained[0][1])):
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_the_platform_chooses_unless_the_config_says(monkeypatch):
  assert states.create_model(tiny_config(conv_backend='xla')).layers == layer_set.cpu('xla')
  assert states.create_model(tiny_config(cpu_speed_path=False)).layers == layer_set.FLAX
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert states.create_model(tiny_config()).layers == layer_set.FLAX
  assert states.create_model(tiny_config(cpu_speed_path=True)).layers == layer_set.cpu('xla')


def test_bfloat16_flax_layers_keep_float32_variables():
  model = models.create_model('cnn', 10, 'bfloat16', widths=(8,), hidden=0)
  variables = model.init(jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 3)), train=False)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_a_run_of_the_cpu_path_resumes_evaluates_and_exports_with_flax_layers(mock_cifar,
                                                                               monkeypatch,
                                                                               tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(num_epochs=2, eval_every_steps=5)
  with monkeypatch.context() as patch:
    stop_after(patch, 7)
    with pytest.raises(KeyboardInterrupt, match='stopped at step 8'):
      loop.train_and_evaluate(config, workdir)
  flax_config = tiny_config(num_epochs=2, eval_every_steps=5, cpu_speed_path=False)
  loop.train_and_evaluate(flax_config, workdir)  # resumes at step 8 on Flax's layers
  assert saved_steps(tmp_path / 'run')[-1] == 20
  on_flax = evaluate.evaluate(flax_config, workdir)
  on_cpu = evaluate.evaluate(config, workdir)
  assert on_flax['checkpoint_step'] == on_cpu['checkpoint_step']
  assert abs(on_flax['top1_accuracy'] - on_cpu['top1_accuracy']) <= 0.01
  assert export.export(flax_config, workdir, 'stablehlo').is_file()

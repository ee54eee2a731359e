import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import _muon  # its Newton-Schulz, which optax does not export

from cifar100_flax.errors import ConfigError
from cifar100_flax.optim import optimizers
from tests.helpers import tiny_config


def _schedule(**overrides):
  return optimizers.create_optimizer(tiny_config(**overrides), total_steps=100,
                                     steps_per_epoch=10)[1]


def test_warmup_cosine_rises_to_the_peak_then_decays():
  schedule = _schedule(schedule='warmup_cosine', learning_rate=0.4, warmup_epochs=1.0)
  assert schedule(0) == 0 and schedule(10) == pytest.approx(0.4) and schedule(100) < 1e-6


def test_one_cycle_peaks_in_the_middle_of_training():
  schedule = _schedule(schedule='one_cycle', learning_rate=0.4)
  values = np.array([schedule(s) for s in range(100)])
  assert values.max() == pytest.approx(0.4, rel=1e-3) and 20 <= values.argmax() <= 40
  assert values[0] < 0.05 and values[-1] < 1e-3


def test_piecewise_constant_steps_down_at_the_boundaries():
  schedule = _schedule(schedule='piecewise_constant', learning_rate=1.0,
                       piecewise_boundaries=(0.5, 0.75), piecewise_scale=0.1)
  assert [float(schedule(s)) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
      [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_reduce_on_plateau_lowers_the_rate_when_the_loss_stalls():
  config = tiny_config(schedule='reduce_on_plateau', plateau_factor=0.5, plateau_patience=1,
                       weight_decay=0.0)
  tx, _ = optimizers.create_optimizer(config, total_steps=100, steps_per_epoch=2)
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  for _ in range(10):  # five "epochs" of a flat loss
    _, state = tx.update({'w': jnp.ones(3)}, state, params, value=jnp.array(1.0))
  assert float(optimizers.plateau_scale(state)) < 1.0


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_every_optimizer_decays_kernels_only(name):
  """Not biases, nor a ViT's class token and position embeddings (matrices, but no kernels)."""
  tx, _ = optimizers.create_optimizer(
      tiny_config(optimizer=name, weight_decay=0.1, schedule='constant'), total_steps=10,
      steps_per_epoch=1)
  params = {'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
            'pos_embed': jnp.ones((1, 5, 2)), 'cls_token': jnp.ones((1, 1, 2))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params, value=jnp.array(0.0))
  assert float(jnp.abs(updates['Dense_0']['kernel']).sum()) > 0
  for name in ('pos_embed', 'cls_token'):
    np.testing.assert_array_equal(updates[name], 0)
  np.testing.assert_array_equal(updates['Dense_0']['bias'], 0)


def test_triangular_rises_linearly_then_falls_to_its_end_fraction():
  schedule = _schedule(schedule='triangular', warmup_epochs=2, triangular_start=0.2,
                       triangular_end=0.1, learning_rate=1.0)
  np.testing.assert_allclose([schedule(s) for s in (0, 10, 20, 60, 100)],
                             [0.2, 0.6, 1.0, 0.55, 0.1], atol=1e-6)


def test_learning_rate_multipliers_scale_the_matching_updates():
  tx, _ = optimizers.create_optimizer(
      tiny_config(weight_decay=0.0, schedule='constant', learning_rate=0.1, momentum=0.0,
                  learning_rate_multipliers=(('norm/bias$', 64.0),)),
      total_steps=10, steps_per_epoch=1)
  params = {'norm': {'bias': jnp.ones(2)}, 'conv': {'bias': jnp.ones(2)}}
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params,
                         value=jnp.array(0.0))
  np.testing.assert_allclose(updates['norm']['bias'], -6.4, rtol=1e-6)
  np.testing.assert_allclose(updates['conv']['bias'], -0.1, rtol=1e-6)


def test_frozen_params_get_no_update_and_no_weight_decay():
  tx, _ = optimizers.create_optimizer(tiny_config(weight_decay=0.1, schedule='constant',
                                             frozen_params='^stem/'),
                                 total_steps=10, steps_per_epoch=1)
  params = {'stem': {'kernel': jnp.ones((2, 2))}, 'head': {'kernel': jnp.ones((2, 2))}}
  grads = {'stem': {'kernel': jnp.ones((2, 2))}, 'head': {'kernel': jnp.ones((2, 2))}}
  updates, _ = tx.update(grads, tx.init(params), params, value=jnp.array(0.0))
  np.testing.assert_array_equal(updates['stem']['kernel'], 0)
  assert float(jnp.abs(updates['head']['kernel']).min()) > 0


def test_a_frozen_params_pattern_that_matches_nothing_is_an_error():
  tx, _ = optimizers.create_optimizer(tiny_config(frozen_params='^no_such_layer'),
                                 total_steps=10, steps_per_epoch=1)
  with pytest.raises(ConfigError, match='frozen_params'):
    tx.init({'kernel': jnp.ones((2, 2))})


def test_a_frozen_backbone_does_not_move_then_learns_slower_than_the_head():
  tx, _ = optimizers.create_optimizer(
      tiny_config(schedule='constant', learning_rate=0.1, momentum=0.0, weight_decay=0.1,
                  backbone_frozen_epochs=2, backbone_learning_rate_multiplier=0.25),
      total_steps=10, steps_per_epoch=1)
  params = {'conv': {'kernel': jnp.ones((2, 2))}, 'fc': {'kernel': jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for step in range(3):
    updates, state = tx.update(grads, state, params, value=jnp.array(0.0))
    expected_head = -0.1 * (1 + 0.1)  # gradient + weight decay
    np.testing.assert_allclose(updates['fc']['kernel'], expected_head, rtol=1e-6)
    np.testing.assert_allclose(updates['conv']['kernel'], 0 if step < 2 else 0.25 * expected_head,
                               rtol=1e-6)


@pytest.mark.parametrize('every', [1, 3])
def test_lookahead_moves_the_weights_to_their_slow_average_and_ends_on_it(every):
  total, decay, lr = 7, 0.5, 0.1
  tx, _ = optimizers.create_optimizer(
      tiny_config(weight_decay=0.0, schedule='constant', learning_rate=lr, momentum=0.0,
                  lookahead_every=every, lookahead_decay=decay),
      total_steps=total, steps_per_epoch=1)
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  w = slow = np.array([1.0, -2.0])
  for count in range(1, total + 1):  # loss w^2 / 2: the gradient is w
    updates, state = tx.update({'w': params['w']}, state, params, value=jnp.array(0.0))
    params = optax.apply_updates(params, updates)
    w = w - lr * w
    if count == total:
      w = slow
    elif count % every == 0:
      d = decay * (count / total) ** 3
      w = slow = d * slow + (1 - d) * w
    np.testing.assert_allclose(params['w'], w, rtol=1e-5, err_msg=f'step {count}')
  assert not np.allclose(w, np.array([1.0, -2.0]) * (1 - lr) ** total)  # lookahead changed the path


def _muon_step(params, grads, **overrides):
  config = tiny_config(optimizer='muon', schedule='constant', momentum=0.0, weight_decay=0.0,
                       **overrides)
  tx, _ = optimizers.create_optimizer(config, total_steps=10, steps_per_epoch=1)
  updates, _ = tx.update(grads, tx.init(params), params, value=jnp.array(0.0))
  return updates


def test_muon_orthogonalises_convolution_kernels_and_leaves_the_rest_to_sgd():
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  params = {'Conv_0': {'kernel': jax.random.normal(keys[0], (3, 3, 4, 8))},
            'Dense_0': {'kernel': jnp.ones((8, 5)), 'bias': jnp.ones(5)},
            'Frozen': {'kernel': jnp.ones((2, 2, 3, 4))}}
  grads = {'Conv_0': {'kernel': jax.random.normal(keys[1], (3, 3, 4, 8))},
           'Dense_0': {'kernel': jax.random.normal(keys[2], (8, 5)), 'bias': jnp.ones(5)},
           'Frozen': {'kernel': jnp.ones((2, 2, 3, 4))}}
  updates = _muon_step(params, grads, learning_rate=0.1, muon_learning_rate=0.5,
                       muon_normalise=False, frozen_params='^Frozen/')
  np.testing.assert_array_equal(updates['Frozen']['kernel'], 0)
  # The kernel's update is -0.5 x a (3 x 3 x 4, 8) matrix whose singular values Newton-Schulz
  # brings near 1 (its quintic, in about [0.7, 1.2]), whatever the gradient's scale.
  singular = np.linalg.svd(np.asarray(updates['Conv_0']['kernel']).reshape(36, 8) / -0.5,
                           compute_uv=False)
  assert 0.6 < singular.min() and singular.max() < 1.25
  np.testing.assert_allclose(updates['Dense_0']['kernel'], -0.1 * grads['Dense_0']['kernel'],
                             rtol=1e-6)
  np.testing.assert_allclose(updates['Dense_0']['bias'], -0.1, rtol=1e-6)


@pytest.mark.parametrize('shape', [(3, 3, 4, 8), (1, 1, 16, 4)])  # a tall and a wide matrix
def test_newton_schulz_is_optaxs_in_float32_and_close_in_bfloat16(shape):
  update = jax.random.normal(jax.random.PRNGKey(0), shape)
  dimensions = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
  optaxs = _muon.orthogonalize_via_newton_schulz(
      update, jnp.array([3.4445, -4.7750, 2.0315]), ns_steps=3, dimension_numbers=dimensions)
  np.testing.assert_allclose(optimizers.orthogonalised(update), optaxs, rtol=1e-5, atol=1e-6)
  # bfloat16 (8 bits of mantissa) through three iterations: near (3-4% here), not equal.
  halved = optimizers.orthogonalised(update, dtype=jnp.bfloat16)
  assert halved.dtype == jnp.float32 and not np.array_equal(halved, optaxs)
  assert float(jnp.linalg.norm(halved - optaxs)) < 0.05 * float(jnp.linalg.norm(optaxs))


def test_muon_orthogonalises_with_the_product_it_is_given():
  calls = []

  def product(a, b, transpose_a=False, transpose_b=False):
    calls.append((a.dtype, transpose_a, transpose_b))
    return optimizers.xla_product(a, b, transpose_a, transpose_b)
  config = tiny_config(optimizer='muon', **{'optim.muon.newton_schulz_dtype': 'bfloat16'})
  tx, _ = optimizers.create_optimizer(config, total_steps=10, steps_per_epoch=1, product=product)
  params = {'Conv_0': {'kernel': jnp.ones((3, 3, 4, 8))}}
  tx.update(params, tx.init(params), params, value=jnp.array(0.0))
  # Three iterations of three products, the first the Gram matrix of the tall (36, 8) X: X^T X.
  assert calls == [(jnp.bfloat16, True, False), (jnp.bfloat16, False, False),
                   (jnp.bfloat16, False, False)] * 3


def test_muon_keeps_each_kernel_at_the_norm_of_its_outputs():
  params = {'Conv_0': {'kernel': 5.0 * jnp.ones((3, 3, 4, 8))}}
  grads = {'Conv_0': {'kernel': jax.random.normal(jax.random.PRNGKey(0), (3, 3, 4, 8))}}
  updates = _muon_step(params, grads, muon_learning_rate=1e-4)
  new = optax.apply_updates(params, updates)['Conv_0']['kernel']
  assert float(jnp.linalg.norm(new)) == pytest.approx(np.sqrt(8), rel=1e-3)
  # Without normalising, the step alone: the kernel's norm barely moves from 5 x sqrt(288).
  updates = _muon_step(params, grads, muon_learning_rate=1e-4, muon_normalise=False)
  new = optax.apply_updates(params, updates)['Conv_0']['kernel']
  assert float(jnp.linalg.norm(new)) == pytest.approx(5 * np.sqrt(288), rel=1e-3)


def test_muon_follows_the_schedule_scaled_to_its_own_peak():
  config = tiny_config(optimizer='muon', schedule='triangular', warmup_epochs=2,
                       triangular_start=0.2, triangular_end=0.0, learning_rate=1.0,
                       muon_learning_rate=0.3, muon_normalise=False, momentum=0.0)
  tx, _ = optimizers.create_optimizer(config, total_steps=10, steps_per_epoch=1)
  params = {'Conv_0': {'kernel': jnp.ones((1, 1, 2, 2))}}
  grads = {'Conv_0': {'kernel': jnp.eye(2).reshape(1, 1, 2, 2)}}  # already orthogonal
  state, sizes = tx.init(params), []
  for _ in range(3):
    updates, state = tx.update(grads, state, params, value=jnp.array(0.0))
    sizes.append(float(jnp.linalg.norm(updates['Conv_0']['kernel'])) / np.sqrt(2))
  # The rates 0.2, 0.6, 1.0 of the peak, x 0.3; Newton-Schulz's quintic takes the identity's
  # singular values, 1, to about 1.1 (not exactly 1, by design).
  np.testing.assert_allclose(np.array(sizes) / sizes[-1], [0.2, 0.6, 1.0], rtol=1e-5)
  assert sizes[-1] == pytest.approx(0.3, rel=0.15)

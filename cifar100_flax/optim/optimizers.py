"""The optax optimiser a config names: SGD, Adam(W), Muon for convolution kernels; weight
decay, clipping, freezing, learning-rate multipliers, reduce-on-plateau and lookahead."""

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cifar100_flax.errors import ConfigError, require, require_non_negative, require_regex
from cifar100_flax.optim import schedules

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'muon')
NEWTON_SCHULZ_DTYPES = ('float32', 'bfloat16')
# The quintic Newton-Schulz iteration's coefficients (Jordan, 2024; optax's and airbench's).
_NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def _decay_mask(params):
  """Weight decay on the kernels of convolutions and dense layers only: not on biases, norms'
  scales and offsets, a ViT's class token and position embeddings (as timm), or a fitted
  whitening."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: jax.tree_util.keystr(path[-1:], simple=True) == 'kernel', params)


def _matching(pattern: str, key: str) -> Callable:
  """params -> a tree of bools: does `pattern` match the leaf's '/'-joined path (e.g.
  'Conv_0/kernel')?"""
  regex = re.compile(pattern)

  def mask(params):
    tree = jax.tree_util.tree_map_with_path(
        lambda path, _: bool(regex.search(jax.tree_util.keystr(path, simple=True, separator='/'))),
        params)
    if not any(jax.tree_util.tree_leaves(tree)):
      raise ConfigError(f'config.{key}: {pattern!r} matches no parameter')
    return tree
  return mask


def _backbone_scale(config: ml_collections.ConfigDict,
                    steps_per_epoch: int) -> optax.GradientTransformation:
  """Updates of all but the head ('fc') x 0 while frozen, then x the backbone multiplier.

  Applied to the optimiser's updates, so that a frozen backbone does not move at all (not even by
  weight decay) while its optimiser state warms up.
  """
  frozen_steps = int(config.optim.backbone_frozen_epochs * steps_per_epoch)
  multiplier = config.optim.backbone_learning_rate_multiplier
  gate = lambda step: jnp.where(step < frozen_steps, 0.0, multiplier)
  return optax.masked(optax.scale_by_schedule(gate), _backbone_mask)


def _backbone_mask(params: Any) -> Any:
  """params -> a tree of bools: True for the backbone (all but the head 'fc')."""
  if 'fc' not in params:
    raise ConfigError('config.optim.backbone_*: the model has no classifier head named fc')
  return {name: jax.tree.map(lambda _, trained=name != 'fc': trained, tree)
          for name, tree in params.items()}


class LookaheadState(NamedTuple):
  inner: optax.OptState
  slow: optax.Params  # the slow weights
  count: jax.Array


def lookahead(inner: optax.GradientTransformation, every: int, final_decay: float,
              total_steps: int) -> optax.GradientTransformationExtraArgs:
  """airbench's lookahead: every `every` steps the weights become decay x slow + (1 - decay) x fast.

  The decay grows as training progress cubed, from 0 to `final_decay`, so it only averages late
  in training, and the last step lands on the slow weights. optax.lookahead would do the syncing
  but keeps both copies in the params themselves (LookaheadParams), changing their structure for
  the model, checkpoints and weight loading; here the slow copy lives in the optimiser state.
  """
  inner = optax.with_extra_args_support(inner)

  def init(params):
    return LookaheadState(inner.init(params), jax.tree.map(jnp.copy, params),
                          jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
    count = state.count + 1
    last = count >= total_steps
    sync = (count % every == 0) | last
    decay = jnp.where(last, 1.0, final_decay * (count / total_steps) ** 3)
    fast = optax.apply_updates(params, updates)
    slow = jax.tree.map(lambda s, f: jnp.where(sync, decay * s + (1 - decay) * f, s),
                        state.slow, fast)
    new_params = jax.tree.map(lambda s, f: jnp.where(sync, s, f), slow, fast)
    updates = jax.tree.map(lambda n, p: n - p, new_params, params)
    return updates, LookaheadState(inner_state, slow, count)

  return optax.GradientTransformationExtraArgs(init, update)


def _is_convolution_kernel(path, leaf) -> bool:
  return jax.tree_util.keystr(path[-1:], simple=True) == 'kernel' and leaf.ndim == 4


def _normalised() -> optax.GradientTransformation:
  """Updates that also rescale each weight to a Frobenius norm of sqrt(outputs).

  airbench's Muon keeps its convolution filters at a fixed norm: before BatchNorm, their scale
  only sets the effective step size, which the learning rate then controls alone (without it the
  weights grow and their steps shrink). No optax transform rescales the parameters themselves.
  """
  def update(updates, state, params):
    def rescaled(u, p):
      target = jnp.sqrt(p.shape[-1]) / (jnp.linalg.norm(p) + 1e-12)
      return u + (target - 1) * p
    return jax.tree.map(rescaled, updates, params), state
  return optax.GradientTransformation(optax.init_empty_state, update)


def xla_product(a: jax.Array, b: jax.Array, transpose_a: bool = False,
                transpose_b: bool = False) -> jax.Array:
  """`a @ b`, either transposed first, on XLA's dot."""
  return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


def orthogonalised(update: jax.Array, product: Callable = xla_product,
                   dtype: Any = jnp.float32, steps: int = 3) -> jax.Array:
  """A convolution kernel's `update` [height, width, inputs, outputs] with the singular values of
  its (height x width x inputs, outputs) matrix brought near 1: `steps` quintic Newton-Schulz
  iterations in `dtype`, multiplied by `product` (xla_product's signature).

  optax's own iteration runs in the update's dtype on XLA's dot, with no say in either: on a CPU
  that is float32 at a fifth of oneDNN's bfloat16 matmul (docs/speed.md). It also transposes a
  tall matrix (most kernels: 3 x 3 x inputs > outputs) to iterate on X X^T; here a tall X
  iterates on X^T X from the right, the same function (f(X^T)^T) without the copies."""
  x = update.reshape(-1, update.shape[-1])
  x = (x / (jnp.linalg.norm(x) + 1e-8)).astype(dtype)
  a, b, c = _NEWTON_SCHULZ
  tall = x.shape[0] > x.shape[1]
  for _ in range(steps):
    if tall:  # X (b A + c A^2), A = X^T X: the smaller square
      gram = product(x, x, transpose_a=True)
      x = a * x + product(x, b * gram + c * product(gram, gram))
    else:
      gram = product(x, x, transpose_b=True)
      x = a * x + product(b * gram + c * product(gram, gram), x)
  return x.reshape(update.shape).astype(update.dtype)


def _muon_direction(config: ml_collections.ConfigDict,
                    product: Callable) -> optax.GradientTransformation:
  """Nesterov momentum (optax's Muon, whose state checkpoints keep), orthogonalised here.

  optax's Newton-Schulz is asked for zero steps (it then only divides each update by its norm):
  three run in `orthogonalised`, in config.optim.muon.newton_schulz_dtype on `product`, as
  airbench94_muon (three, not five: they even out the smallest singular values less, which
  trains as well)."""
  dimensions = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
  momentum = optax.contrib.scale_by_muon(
      beta=config.optim.muon.momentum, nesterov=True, ns_steps=0,
      weight_dimension_numbers=lambda tree: jax.tree.map(lambda _: dimensions, tree))
  dtype = jnp.dtype(config.optim.muon.newton_schulz_dtype)

  def update(updates, state, params=None):
    updates, state = momentum.update(updates, state, params)
    return jax.tree.map(lambda u: orthogonalised(u, product, dtype), updates), state
  return optax.GradientTransformation(momentum.init, update)


def _muon(config: ml_collections.ConfigDict, schedule: schedules.Schedule,
          product: Callable) -> optax.GradientTransformation:
  """Muon (Jordan, 2024) for the convolution kernels, as airbench94_muon: Nesterov momentum,
  orthogonalised by Newton-Schulz over (height x width x inputs, outputs), on weights kept at a
  fixed norm (else decayed as optax.contrib.muon does); at muon_learning_rate x the schedule's
  shape. Everything else: SGD as 'sgd'."""
  scale = config.optim.muon.learning_rate / config.optim.learning_rate
  muon_schedule = lambda step: schedule(step) * scale
  kernels = [_muon_direction(config, product)]
  if config.optim.weight_decay and not config.optim.muon.normalise:
    kernels.append(optax.add_decayed_weights(config.optim.weight_decay))
  kernels.append(optax.scale_by_learning_rate(muon_schedule))
  if config.optim.muon.normalise:
    # The weights normalised, then the step (as airbench): one update brings both.
    kernels.append(_normalised())
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, leaf: 'muon' if _is_convolution_kernel(path, leaf) else 'rest', params)
  return optax.multi_transform({'muon': optax.chain(*kernels), 'rest': _sgd(config, schedule)},
                               labels)


def _sgd(config: ml_collections.ConfigDict,
         schedule: schedules.Schedule) -> optax.GradientTransformation:
  parts = []
  if config.optim.weight_decay:
    parts.append(optax.add_decayed_weights(config.optim.weight_decay, mask=_decay_mask))
  parts.append(optax.sgd(schedule, momentum=config.optim.momentum or None,
                         nesterov=config.optim.nesterov))
  return optax.chain(*parts)


def create_optimizer(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int,
    product: Callable = xla_product) -> tuple[optax.GradientTransformationExtraArgs,
                                              schedules.Schedule]:
  """The optimiser (its update takes `value=loss` for reduce_on_plateau) and its base schedule.

  `product`: what Muon's Newton-Schulz multiplies with (xla_product's signature; the CPU path
  passes oneDNN's)."""
  schedule = schedules.SCHEDULES[config.schedule.name](config, total_steps, steps_per_epoch)
  parts = []
  if config.optim.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.optim.grad_clip_norm))
  if config.optim.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=config.optim.weight_decay, mask=_decay_mask))
  elif config.optim.name == 'sgd':
    parts.append(_sgd(config, schedule))
  elif config.optim.name == 'muon':
    parts.append(_muon(config, schedule, product))
  else:
    if config.optim.weight_decay:
      parts.append(optax.add_decayed_weights(config.optim.weight_decay, mask=_decay_mask))
    parts.append(optax.adam(schedule))
  if config.schedule.name == 'reduce_on_plateau':
    parts.append(optax.contrib.reduce_on_plateau(
        factor=config.schedule.plateau_factor, patience=config.schedule.plateau_patience,
        accumulation_size=steps_per_epoch))
  if config.optim.backbone_frozen_epochs or config.optim.backbone_learning_rate_multiplier != 1:
    parts.append(_backbone_scale(config, steps_per_epoch))
  for pattern, multiplier in config.optim.learning_rate_multipliers:
    parts.append(optax.masked(optax.scale(multiplier),
                              _matching(pattern, 'optim.learning_rate_multipliers')))
  tx = optax.chain(*parts)
  if config.optim.frozen_params:
    # Frozen parameters get no update at all (and so no weight decay); XLA then drops their
    # gradients.
    frozen = _matching(config.optim.frozen_params, 'optim.frozen_params')
    tx = optax.multi_transform({False: tx, True: optax.set_to_zero()}, frozen)
  if config.optim.lookahead.every:
    tx = lookahead(tx, config.optim.lookahead.every, config.optim.lookahead.decay, total_steps)
  return tx, schedule


def plateau_scale(opt_state) -> float:
  """The factor reduce_on_plateau applies now (1 without it)."""
  is_plateau = lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)
  states = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_plateau) if is_plateau(x)]
  return states[0].scale if states else 1.0


def check_config(optim: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `config.optim` value that cannot work."""
  require(optim.name in OPTIMIZERS,
          f'config.optim.name={optim.name!r} is unknown; choose one of {list(OPTIMIZERS)}')
  require(optim.learning_rate > 0,
          f'config.optim.learning_rate must be > 0, got {optim.learning_rate}')
  require_non_negative(optim, 'config.optim', (
      'momentum', 'weight_decay', 'grad_clip_norm', 'backbone_frozen_epochs',
      'backbone_learning_rate_multiplier'))
  require_non_negative(optim.muon, 'config.optim.muon', ('learning_rate',))
  require(0 <= optim.muon.momentum < 1,
          f'config.optim.muon.momentum must be in [0, 1), got {optim.muon.momentum}')
  require(optim.muon.newton_schulz_dtype in NEWTON_SCHULZ_DTYPES,
          f'config.optim.muon.newton_schulz_dtype={optim.muon.newton_schulz_dtype!r} is not one '
          f'of {list(NEWTON_SCHULZ_DTYPES)}')
  require_non_negative(optim.lookahead, 'config.optim.lookahead', ('every',))
  require(0 <= optim.lookahead.decay <= 1,
          f'config.optim.lookahead.decay must be in [0, 1], got {optim.lookahead.decay}')
  require_regex('config.optim.frozen_params', optim.frozen_params)
  for pair in optim.learning_rate_multipliers:
    require(len(pair) == 2 and isinstance(pair[1], (int, float)) and pair[1] > 0,
            f'config.optim.learning_rate_multipliers must hold (regex, multiplier > 0) pairs, '
            f'got {pair!r}')
    require_regex('config.optim.learning_rate_multipliers', pair[0])


def check_params(optim: ml_collections.ConfigDict, params: Any) -> None:
  """Raises ConfigError where `config.optim` names parameters `params` (shapes will do) lacks: a
  regex that matches none, a backbone schedule without a head named fc. Run by config/checks.py,
  so that this fails before training, not when the optimiser first meets the parameters."""
  for pattern, _ in optim.learning_rate_multipliers:
    _matching(pattern, 'optim.learning_rate_multipliers')(params)
  if optim.frozen_params:
    _matching(optim.frozen_params, 'optim.frozen_params')(params)
  if optim.backbone_frozen_epochs or optim.backbone_learning_rate_multiplier != 1:
    _backbone_mask(params)

"""The computations of training and evaluation, and the states they act on.

Pure functions of (state, batch, config), jitted here: no files, no loop, no flags. train.py runs
`train_step` and `evaluate_split` in its loop; evaluate.py, the report and Grad-CAM use
`ModelState` (a trained model without its optimiser), `preprocess` and `eval_step`.
"""

import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cifar100_flax import augment, console, dataset, metrics, mixing, models, optim, sharding
from cifar100_flax.cpu import onednn
from cifar100_flax.models import layer_set


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # the run's key; step k uses fold_in(rng, k), so resuming needs nothing else
  # With config.ema_decay: {'params', 'batch_stats'} averaged over the steps; else None.
  ema: Any = None

  def with_variables(self, params: Any, batch_stats: Any) -> 'TrainState':
    """This state with other weights (pretrained ones), the EMA restarted from them."""
    ema = None if self.ema is None else _copy({'params': params, 'batch_stats': batch_stats})
    return self.replace(params=params, batch_stats=batch_stats, ema=ema)


def _copy(tree: Any) -> Any:
  # The EMA starts equal to the weights but in buffers of its own: the step donates both.
  return jax.tree.map(jnp.copy, tree)


class ModelState(flax.struct.PyTreeNode):
  """A trained model without its optimiser: what evaluation and inference need."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  params: Any
  batch_stats: Any
  step: jax.Array  # the training step the variables come from


def uses_cpu_speed_path(config: ml_collections.ConfigDict) -> bool:
  """config.cpu_speed_path, or (None) whether JAX's platform is the CPU."""
  if config.cpu_speed_path is not None:
    return config.cpu_speed_path
  return jax.default_backend() == 'cpu'


def create_model(config: ml_collections.ConfigDict,
                 conv_backend: Optional[str] = None) -> nn.Module:
  """config.model, built from Flax's layers, or on the CPU speed path (uses_cpu_speed_path) from
  its layers with the convolutions of `conv_backend` ('onednn' or 'xla'; default:
  config.conv_backend resolved, which builds the oneDNN extension the first time it is chosen)."""
  layers = layer_set.FLAX
  if uses_cpu_speed_path(config):
    layers = layer_set.cpu(conv_backend or onednn.resolve(config.conv_backend))
  return models.create_model(config.model, dataset.NUM_CLASSES, config.dtype, layers=layers,
                             **config.model_kwargs)


def _init_variables(model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array,
                    images: np.ndarray) -> dict:
  return model.init(rng, preprocess(images, config), train=False)


def abstract_variables(model: nn.Module, config: ml_collections.ConfigDict) -> dict:
  """The shapes and dtypes of the model's {'params', 'batch_stats'}, computed without running it."""
  images = jax.ShapeDtypeStruct((1, *dataset.IMAGE_SHAPE), jnp.uint8)
  variables = jax.eval_shape(functools.partial(_init_variables, model, config),
                             jax.random.PRNGKey(0), images)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int,
                       sample_images: Optional[np.ndarray] = None,
                       model: Optional[nn.Module] = None) -> tuple[TrainState, optim.Schedule]:
  """A freshly initialised state, and the learning-rate schedule its optimiser follows.

  `sample_images` (uint8 training images) are what the model is initialised on; models that fit
  some weights to the data (airbench's whitening) need them, others only use their shape.
  `model`: default `create_model(config)`.
  """
  tx, schedule = optim.create_optimizer(config, config.num_epochs * steps_per_epoch,
                                        steps_per_epoch)
  model = model or create_model(config)
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  if sample_images is None:
    sample_images = np.zeros((1, *dataset.IMAGE_SHAPE), np.uint8)
  variables = jax.jit(functools.partial(_init_variables, model, config))(init_rng, sample_images)
  batch_stats = variables.get('batch_stats', {})
  ema = (_copy({'params': variables['params'], 'batch_stats': batch_stats}) if config.ema_decay
         else None)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=batch_stats, rng=run_rng, ema=ema)
  return state, schedule


def evaluated_model(state: TrainState) -> ModelState:
  """What validation, testing and export use: the EMA weights when the run keeps them."""
  variables = (state.ema if state.ema is not None
               else {'params': state.params, 'batch_stats': state.batch_stats})
  return ModelState(apply_fn=state.apply_fn, step=state.step, **variables)


def with_evaluated_batch_stats(state: TrainState, batch_stats: Any) -> TrainState:
  """`state` whose evaluated model (see evaluated_model) has these BatchNorm statistics."""
  if state.ema is not None:
    return state.replace(ema={**state.ema, 'batch_stats': batch_stats})
  return state.replace(batch_stats=batch_stats)


def compiler_options(config: ml_collections.ConfigDict) -> Optional[dict]:
  """config.xla_cpu_options for `jax.jit`, when running on CPU (other backends reject them)."""
  if jax.default_backend() != 'cpu' or not config.xla_cpu_options:
    return None
  return dict(config.xla_cpu_options)


def jit_train_step(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None,
                   image_size: Optional[int] = None) -> Callable:
  """train_step for `config` and `image_size`, jitted; its input state is donated."""
  return jax.jit(functools.partial(train_step, config=config, image_size=image_size),
                 donate_argnums=0,
                 out_shardings=sharding.replicated(mesh) if mesh else None,
                 compiler_options=compiler_options(config))


def jit_eval_step(config: ml_collections.ConfigDict) -> Callable:
  return jax.jit(functools.partial(eval_step, config=config),
                 compiler_options=compiler_options(config))


def eval_image_size(config: ml_collections.ConfigDict) -> int:
  """The side images are evaluated at (0: CIFAR's own)."""
  return config.eval_image_size or config.image_size


def train_image_size(config: ml_collections.ConfigDict, epoch: float) -> int:
  """The side training images have at `epoch` (0: CIFAR's own): config.image_size, or the size
  config.image_size_schedule gives from the last of its start epochs at or before `epoch`."""
  sizes = [size for start, size in config.image_size_schedule if start <= epoch]
  return sizes[-1] if sizes else config.image_size


def preprocess(images: jax.Array, config: ml_collections.ConfigDict,
               key: Optional[jax.Array] = None, flips: Optional[jax.Array] = None,
               size: Optional[int] = None) -> jax.Array:
  """uint8 images -> normalised float images. With a key, as training sees them: augmented, at
  `size` (default config.image_size; `flips`: the input pipeline's alternating flips); without,
  as evaluation does, at eval_image_size(config)."""
  images = images.astype(jnp.float32)
  if key is not None:
    augment_key, cutout_key, erasing_key = jax.random.split(key, 3)
    images = augment.augment(images, augment_key, config.augment, flips)
  mean, stddev = dataset.NORMALISATIONS[config.normalisation]
  images = (images - jnp.array(mean)) / jnp.array(stddev)
  if key is not None and config.augment.cutout_size:
    images = augment.cutout(images, cutout_key, config.augment.cutout_size)
  if key is not None and config.augment.random_erasing:
    images = augment.random_erasing(images, erasing_key, config.augment.random_erasing)
  if key is None:
    size = eval_image_size(config)
  elif size is None:
    size = config.image_size
  if size and size != images.shape[1]:
    # Pretrained backbones see objects at their own scale (upsampled on the device); low
    # resolution makes early epochs cheap (config.image_size_schedule).
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


def _mixes(config: ml_collections.ConfigDict) -> bool:
  return bool(config.augment.mixup_alpha or config.augment.cutmix_alpha)


def train_step(state: TrainState, batch: dict, config: ml_collections.ConfigDict,
               image_size: Optional[int] = None) -> tuple[TrainState, metrics.TrainMetrics]:
  """One step of training on images at `image_size` (default config.image_size)."""
  augment_key, dropout_key, mix_key = jax.random.split(jax.random.fold_in(state.rng, state.step),
                                                      3)
  images = preprocess(batch['image'], config, augment_key, batch.get('flip'), image_size)
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], dataset.NUM_CLASSES),
                                config.label_smoothing)
  if _mixes(config):
    images, targets = mixing.mix_batch(images, targets, mix_key, config.augment)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    return optax.softmax_cross_entropy(logits, targets).mean(), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if ema is not None:
    # TensorFlow's EMA warm-up: early averages forget the random start (the new head) quickly.
    decay = jnp.minimum(config.ema_decay, (1 + state.step) / (10 + state.step))
    ema = optax.incremental_update({'params': params, 'batch_stats': batch_stats}, ema, 1 - decay)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        batch_stats=batch_stats, ema=ema)
  return state, metrics.TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'])


def test_time_augmented(predict: Callable, images: jax.Array,
                        config: ml_collections.ConfigDict) -> jax.Array:
  """Logits of `images`, averaged over the test-time augmentations the config turns on.

  Flip: the mean of the image's and its mirror's logits. Translate by p pixels (airbench's
  multi-crop): half the weight to the image, a quarter each to its copies shifted by (-p, -p) and
  (p, p), the border filled by reflection.
  """
  def flip_averaged(x):
    return (predict(x) + predict(x[:, :, ::-1])) / 2 if config.eval_flip_tta else predict(x)

  logits = flip_averaged(images)
  p = config.eval_translate_tta
  if p:
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
    shifted = [padded[:, :-2 * p, :-2 * p], padded[:, 2 * p:, 2 * p:]]
    logits = logits / 2 + sum(flip_averaged(x) for x in shifted) / 4
  return logits


def predict_logits(state: TrainState | ModelState, images: jax.Array,
                   config: ml_collections.ConfigDict) -> jax.Array:
  """The logits evaluation gives uint8 [B, 32, 32, 3] `images`: preprocessed, resized to
  eval_image_size, test-time augmented."""
  predict = functools.partial(state.apply_fn,
                              {'params': state.params, 'batch_stats': state.batch_stats},
                              train=False)
  return test_time_augmented(predict, preprocess(images, config), config)


def eval_step(state: TrainState | ModelState, batch: dict,
              config: ml_collections.ConfigDict) -> tuple[metrics.EvalMetrics, jax.Array]:
  """Metrics of a padded batch (its `mask` marks the real rows) and its class probabilities."""
  logits = predict_logits(state, batch['image'], config)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  step_metrics = metrics.EvalMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'], mask=batch['mask'])
  return step_metrics, jax.nn.softmax(logits)


def evaluate_split(jitted_eval_step: Callable, state: TrainState | ModelState,
                   split: dataset.Split, batch_size: int, mesh: Mesh,
                   description: str = '') -> tuple[dict, np.ndarray]:
  """Metrics over every example of `split`, and its [N, classes] probabilities in split order.

  `description`: the progress bar's label (none without it)."""
  totals, probs = None, []
  batches = dataset.eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  if description:
    batches = console.progress(batches, description, total=-(-len(split) // batch_size))
  for batch in batches:
    step_metrics, batch_probs = jitted_eval_step(state, sharding.shard_batch(batch, mesh))
    totals = step_metrics if totals is None else totals.merge(step_metrics)
    probs.append(multihost_utils.process_allgather(batch_probs, tiled=True))
  computed = {k: float(v) for k, v in totals.compute().items()}
  return computed, np.concatenate(probs)[:len(split)]


def flops_per_step(config: ml_collections.ConfigDict, state: TrainState, batch_size: int,
                   image_size: Optional[int] = None) -> Optional[float]:
  """XLA's count of one training step's floating-point operations (all devices together) at
  `image_size` (default config.image_size), from the lowered step; None where the backend counts
  only compiled code (PJRT plugins: CUDA, ROCm, TPU), for `compiled_flops` to count.

  Counted on the model built with XLA's own convolutions: XLA cannot see into oneDNN's.
  """
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *dataset.IMAGE_SHAPE), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
           'flip': jax.ShapeDtypeStruct((batch_size,), jnp.bool_)}
  xla_state = state.replace(apply_fn=create_model(config, 'xla').apply)
  step = jax.jit(functools.partial(train_step, config=config, image_size=image_size))
  return _flops(step.lower(xla_state, batch).cost_analysis())


def compiled_flops(compiled: jax.stages.Compiled) -> Optional[float]:
  """XLA's count of a compiled step's floating-point operations, or None where it has none."""
  return _flops(compiled.cost_analysis())


def _flops(cost: Any) -> Optional[float]:
  # cost_analysis(): a dict; a list of one dict per executable in older JAX; None (or no 'flops')
  # where the backend does not count.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None

"""The computations of training and evaluation: preprocessing, the train and eval steps (jitted
here), test-time augmentation and a split's evaluation.

Pure functions of (state, batch, config): no files, no loop, no flags. The loop runs
`train_step` and `evaluate_split`; evaluation, inference and Grad-CAM use `preprocess`,
`predict_logits` and `eval_step` on a `states.ModelState`."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cifar100_flax import console
from cifar100_flax.data import cifar100, mixing, preprocessing
from cifar100_flax.training import metrics, sharding, states


def compiler_options(config: ml_collections.ConfigDict) -> dict | None:
  """config.cpu.xla_options for `jax.jit`, when running on CPU (other backends reject them)."""
  if jax.default_backend() != 'cpu' or not config.cpu.xla_options:
    return None
  return dict(config.cpu.xla_options)


def jit_train_step(config: ml_collections.ConfigDict, mesh: Mesh | None = None,
                   image_size: int | None = None) -> Callable:
  """train_step for `config` and `image_size`, jitted; its input state is donated."""
  return jax.jit(functools.partial(train_step, config=config, image_size=image_size),
                 donate_argnums=0,
                 out_shardings=sharding.replicated(mesh) if mesh else None,
                 compiler_options=compiler_options(config))


def jit_eval_step(config: ml_collections.ConfigDict) -> Callable:
  return jax.jit(functools.partial(eval_step, config=config),
                 compiler_options=compiler_options(config))


def _mixes(config: ml_collections.ConfigDict) -> bool:
  return bool(config.augment.mixup_alpha or config.augment.cutmix_alpha)


def train_step(state: states.TrainState, batch: dict, config: ml_collections.ConfigDict,
               image_size: int | None = None) -> tuple[states.TrainState, metrics.TrainMetrics]:
  """One step of training on images at `image_size` (default config.data.image_size)."""
  augment_key, dropout_key, mix_key = jax.random.split(jax.random.fold_in(state.rng, state.step),
                                                      3)
  images = preprocessing.preprocess(batch['image'], config, augment_key, batch.get('flip'),
                                    image_size)
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], cifar100.NUM_CLASSES),
                                config.train.label_smoothing)
  if 'teacher' in batch:  # mixed alike: the teachers' targets follow the labels'
    targets = jnp.concatenate([targets, batch['teacher']], axis=-1)
  if _mixes(config):
    images, targets = mixing.mix_batch(images, targets, mix_key, config.augment)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    if 'teacher' in batch:
      label_targets, teacher_targets = jnp.split(targets, 2, axis=-1)
      loss = distillation_loss(logits, label_targets, teacher_targets, config.distill.temperature,
                               config.distill.weight)
    else:
      loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if ema is not None:
    # TensorFlow's EMA warm-up: early averages forget the random start (the new head) quickly.
    decay = jnp.minimum(config.train.ema_decay, (1 + state.step) / (10 + state.step))
    ema = optax.incremental_update({'params': params, 'batch_stats': batch_stats}, ema, 1 - decay)
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        batch_stats=batch_stats, ema=ema)
  return state, metrics.TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'])


def distillation_loss(logits: jax.Array, label_targets: jax.Array, teacher_targets: jax.Array,
                      temperature: float, weight: float) -> jax.Array:
  """(1 - weight) CE(labels, logits) + weight T^2 CE(teachers, logits / T), batch mean.

  `teacher_targets` are the teachers' distributions already softened by T (distillation.py does
  that once on the host); T^2 keeps the soft term's gradients at the scale of the hard one's
  (Hinton et al., 2015)."""
  hard = optax.softmax_cross_entropy(logits, label_targets)
  soft = optax.softmax_cross_entropy(logits / temperature, teacher_targets) * temperature**2
  return ((1 - weight) * hard + weight * soft).mean()


def test_time_augmented(predict: Callable, images: jax.Array,
                        config: ml_collections.ConfigDict) -> jax.Array:
  """Logits of `images`, averaged over the test-time augmentations the config turns on.

  Flip: the mean of the image's and its mirror's logits. Translate by p pixels (airbench's
  multi-crop): half the weight to the image, a quarter each to its copies shifted by (-p, -p) and
  (p, p), the border filled by reflection.
  """
  def flip_averaged(x):
    return (predict(x) + predict(x[:, :, ::-1])) / 2 if config.eval.flip_tta else predict(x)

  logits = flip_averaged(images)
  p = config.eval.translate_tta
  if p:
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
    shifted = [padded[:, :-2 * p, :-2 * p], padded[:, 2 * p:, 2 * p:]]
    logits = logits / 2 + sum(flip_averaged(x) for x in shifted) / 4
  return logits


def predict_logits(state: states.TrainState | states.ModelState, images: jax.Array,
                   config: ml_collections.ConfigDict) -> jax.Array:
  """The logits evaluation gives uint8 [B, 32, 32, 3] `images`: preprocessed, resized to
  eval_image_size, test-time augmented."""
  predict = functools.partial(state.apply_fn,
                              {'params': state.params, 'batch_stats': state.batch_stats},
                              train=False)
  return test_time_augmented(predict, preprocessing.preprocess(images, config), config)


def eval_step(state: states.TrainState | states.ModelState, batch: dict,
              config: ml_collections.ConfigDict) -> tuple[metrics.EvalMetrics, jax.Array]:
  """Metrics of a padded batch (its `mask` marks the real rows) and its class probabilities."""
  logits = predict_logits(state, batch['image'], config)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  step_metrics = metrics.EvalMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'], mask=batch['mask'])
  return step_metrics, jax.nn.softmax(logits)


def evaluate_split(jitted_eval_step: Callable, state: states.TrainState | states.ModelState,
                   split: cifar100.Split, batch_size: int, mesh: Mesh,
                   description: str = '') -> tuple[dict, np.ndarray]:
  """Metrics over every example of `split`, and its [N, classes] probabilities in split order.

  `description`: the progress bar's label (none without it)."""
  totals, probs = None, []
  batches = cifar100.eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  if description:
    batches = console.progress(batches, description, total=-(-len(split) // batch_size))
  for batch in batches:
    step_metrics, batch_probs = jitted_eval_step(state, sharding.shard_batch(batch, mesh))
    totals = step_metrics if totals is None else totals.merge(step_metrics)
    probs.append(multihost_utils.process_allgather(batch_probs, tiled=True))
  computed = {k: float(v) for k, v in totals.compute().items()}
  return computed, np.concatenate(probs)[:len(split)]

"""The training loop: a jitted, data-parallel train step, periodic validation, early stopping."""

import dataclasses
import functools
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import periodic_actions
from flax.training import early_stopping, train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cifar100_flax import (augment, checkpointing, configuration, input_pipeline, metrics,
                           models, optim, pretrained, sharding, writers)
from cifar100_flax.errors import TrainingDivergedError
from cifar100_flax.models import onednn


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # the run's key; step k uses fold_in(rng, k), so resuming needs nothing else


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  return models.create_model(config.model, input_pipeline.NUM_CLASSES, config.dtype,
                             **config.model_kwargs)


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int,
                       sample_images: Optional[np.ndarray] = None) -> tuple[TrainState, optim.Schedule]:
  """A freshly initialised state, and the learning-rate schedule its optimiser follows.

  `sample_images` (uint8 training images) are what the model is initialised on; models that fit
  some weights to the data (airbench's whitening) need them, others only use their shape.
  """
  tx, schedule = optim.create_optimizer(config, config.num_epochs * steps_per_epoch, steps_per_epoch)
  model = create_model(config)
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  if sample_images is None:
    sample_images = np.zeros((1, *input_pipeline.IMAGE_SHAPE), np.uint8)
  variables = jax.jit(lambda rng, images: model.init(rng, preprocess(images, config), train=False))(
      init_rng, sample_images)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=variables.get('batch_stats', {}), rng=run_rng)
  return state, schedule


def _with_pretrained(state: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """`state` with config.pretrained's weights for everything but the classifier head ('fc')."""
  if not config.pretrained:
    return state
  variables = pretrained.fit_to_model(
      pretrained.load(config.pretrained, config.model),
      {'params': state.params, 'batch_stats': state.batch_stats}, keep=('fc',))
  logging.info('Initialised from %s (all but the head).', config.pretrained)
  return state.replace(params=variables['params'], batch_stats=variables['batch_stats'])


def compiler_options(config: ml_collections.ConfigDict) -> Optional[dict]:
  """config.xla_cpu_options for `jax.jit`, when running on CPU (other backends reject them)."""
  if jax.default_backend() != 'cpu' or not config.xla_cpu_options:
    return None
  return dict(config.xla_cpu_options)


def _with_conv_backend(step: Callable, config: ml_collections.ConfigDict) -> Callable:
  """`step` traced with config.conv_backend's convolutions."""
  @functools.wraps(step)
  def traced(*args, **kwargs):
    with onednn.convolutions(config.conv_backend):
      return step(*args, config=config, **kwargs)
  return traced


def jit_train_step(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> Callable:
  """train_step for `config`, jitted; its input state is donated."""
  return jax.jit(_with_conv_backend(train_step, config), donate_argnums=0,
                 out_shardings=sharding.replicated(mesh) if mesh else None,
                 compiler_options=compiler_options(config))


def jit_eval_step(config: ml_collections.ConfigDict) -> Callable:
  return jax.jit(_with_conv_backend(eval_step, config), compiler_options=compiler_options(config))


def preprocess(images: jax.Array, config: ml_collections.ConfigDict,
               key: Optional[jax.Array] = None, flips: Optional[jax.Array] = None) -> jax.Array:
  """uint8 images -> normalised float images at config.image_size; augmented when a key is given
  (`flips`: the input pipeline's alternating flips)."""
  images = images.astype(jnp.float32)
  if key is not None:
    augment_key, cutout_key = jax.random.split(key)
    images = augment.augment(images, augment_key, config.augment, flips)
  mean, stddev = input_pipeline.NORMALISATIONS[config.normalisation]
  images = (images - jnp.array(mean)) / jnp.array(stddev)
  if key is not None and config.augment.cutout_size:
    images = augment.cutout(images, cutout_key, config.augment.cutout_size)
  if config.image_size and config.image_size != images.shape[1]:
    # Pretrained backbones see objects at their own scale: upsample on the device.
    size = config.image_size
    images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), 'bilinear')
  return images


def train_step(state: TrainState, batch: dict,
               config: ml_collections.ConfigDict) -> tuple[TrainState, metrics.TrainMetrics]:
  augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  images = preprocess(batch['image'], config, augment_key, batch.get('flip'))
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], input_pipeline.NUM_CLASSES),
                                config.label_smoothing)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats'])
    return optax.softmax_cross_entropy(logits, targets).mean(), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state, batch_stats=batch_stats)
  return state, metrics.TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'])


def _test_time_augmented(predict: Callable, images: jax.Array,
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


def eval_step(state: TrainState, batch: dict,
              config: ml_collections.ConfigDict) -> tuple[metrics.EvalMetrics, jax.Array]:
  images = preprocess(batch['image'], config)
  predict = functools.partial(state.apply_fn, {'params': state.params, 'batch_stats': state.batch_stats},
                              train=False)
  logits = _test_time_augmented(predict, images, config)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  step_metrics = metrics.EvalMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label'], mask=batch['mask'])
  return step_metrics, jax.nn.softmax(logits)


def evaluate_split(jitted_eval_step: Callable, state: TrainState, split: input_pipeline.Split,
                   batch_size: int, mesh: Mesh) -> tuple[dict, np.ndarray]:
  """Metrics over every example of `split`, and its [N, classes] probabilities in split order."""
  totals, probs = None, []
  for batch in input_pipeline.eval_batches(split, batch_size, jax.process_index(),
                                           jax.process_count()):
    step_metrics, batch_probs = jitted_eval_step(state, sharding.shard_batch(batch, mesh))
    totals = step_metrics if totals is None else totals.merge(step_metrics)
    probs.append(multihost_utils.process_allgather(batch_probs, tiled=True))
  computed = {k: float(v) for k, v in totals.compute().items()}
  return computed, np.concatenate(probs)[:len(split)]


def flops_per_step(config: ml_collections.ConfigDict, state: TrainState, batch_size: int) -> float:
  """XLA's count of one training step's floating-point operations (all devices together).

  Counted on the step with XLA's own convolutions: XLA cannot see into oneDNN's.
  """
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *input_pipeline.IMAGE_SHAPE), jnp.uint8),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
           'flip': jax.ShapeDtypeStruct((batch_size,), jnp.bool_)}
  step = jax.jit(functools.partial(train_step, config=config))
  return float(step.lower(state, batch).cost_analysis().get('flops', 0.0))


def _check_finite(values: dict, step: int) -> None:
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    raise TrainingDivergedError(
        f'training diverged at step {step}: {bad}. The last good checkpoint is kept; lower '
        f'config.learning_rate or set config.grad_clip_norm, then resume or start a new workdir.')


def _early_stopper(config: ml_collections.ConfigDict, saved: Optional[dict]) -> early_stopping.EarlyStopping:
  # flax's EarlyStopping minimises, so metrics to maximise are negated on the way in; and it stops
  # at the (patience + 1)-th evaluation without improvement, so it gets patience - 1.
  patience = config.early_stopping_patience - 1 if config.early_stopping_patience else 2**31
  stopper = early_stopping.EarlyStopping(min_delta=config.early_stopping_min_delta, patience=patience)
  return stopper.replace(**saved) if saved else stopper


def _signed(config: ml_collections.ConfigDict, value: float) -> float:
  mode = configuration.EARLY_STOPPING_METRICS[config.early_stopping_metric]
  return -value if mode == 'max' else value


class _StopRequests:
  """Turns Ctrl-C and SIGTERM (a cluster's preemption) into a flag read between steps.

  A KeyboardInterrupt raised inside a step could leave the state's buffers donated and unsaveable;
  with the flag, the loop finishes the step, saves a checkpoint and then stops.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._request)
    return self

  def _request(self, signum, frame):
    if self.requested:  # A second Ctrl-C means: stop now, without saving.
      raise KeyboardInterrupt
    logging.warning('Signal %d: stopping after this step (again to stop at once).', signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the final progress record.

  Raises KeyboardInterrupt after saving a checkpoint if stopped by Ctrl-C or SIGTERM.
  """
  configuration.validate(config)
  mesh = sharding.create_mesh()
  splits = input_pipeline.load_splits(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(splits['train']), config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  eval_every = config.eval_every_steps or steps_per_epoch
  state, schedule = create_train_state(config, steps_per_epoch,
                                       splits['train'].images[:config.init_sample_size])
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint_keep)
  if jax.process_index() == 0:  # For --mode report and ensembles, which need no --config.
    (pathlib.Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=1))
  restored = checkpointer.restore_latest(state)
  state, progress = restored or (_with_pretrained(state, config), {'train_seconds': 0.0})
  stopper = _early_stopper(config, progress.get('early_stopping'))
  state = sharding.replicate(state, mesh)
  step = int(state.step)
  if restored:
    logging.info('Resuming from step %d of %d.', step, total_steps)

  writer = writers.create_writer(workdir, jax.process_index() == 0)
  report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  batches = input_pipeline.train_batches(splits['train'], config.batch_size, config.shuffle_seed,
                                         step, jax.process_index(), jax.process_count())
  jitted_train_step = jit_train_step(config, mesh)
  jitted_eval_step = jit_eval_step(config)
  step_flops = flops_per_step(config, state, config.batch_size)
  logging.info('A training step is %.3g FLOPs (%.3g per image).', step_flops,
               step_flops / config.batch_size)
  train_metrics, started = None, time.time()

  def save(is_best: bool) -> None:
    nonlocal started
    progress.update(train_seconds=progress['train_seconds'] + time.time() - started,
                    early_stopping=dataclasses.asdict(stopper), total_steps=total_steps,
                    train_flops=step * step_flops)
    started = time.time()
    checkpointer.save(state, progress, is_best)

  def validate(step: int) -> early_stopping.EarlyStopping:
    val, _ = evaluate_split(jitted_eval_step, state, splits['validation'], config.eval_batch_size,
                            mesh)
    val = {f'val_{k}': v for k, v in val.items()}
    _check_finite(val, step)
    updated = stopper.update(_signed(config, val[config.early_stopping_metric]))
    if updated.has_improved:
      progress.update(best_step=step, best_metric=val[config.early_stopping_metric],
                      best_metric_name=config.early_stopping_metric)
    writer.write_scalars(step, {**val, 'epoch': step / steps_per_epoch})
    return updated

  with _StopRequests() as stop:
    try:
      while step < total_steps and not stopper.should_stop and not stop.requested:
        state, step_metrics = jitted_train_step(state, sharding.shard_batch(next(batches), mesh))
        step += 1
        train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
        report_progress(step)
        if step % config.log_every_steps == 0 or step == total_steps:
          scalars = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
          _check_finite(scalars, step)
          scalars['learning_rate'] = float(schedule(step - 1) * optim.plateau_scale(state.opt_state))
          writer.write_scalars(step, scalars)
          train_metrics = None
        if step % eval_every == 0 or step == total_steps:
          if len(splits['validation']):
            stopper = validate(step)
            save(is_best=stopper.has_improved)
          else:  # Every training image is trained on: the newest model is the one to evaluate.
            progress.update(best_step=step)
            writer.write_scalars(step, {'epoch': step / steps_per_epoch})
            save(is_best=True)
      if stop.requested:
        save(is_best=False)
        raise KeyboardInterrupt(f'stopped at step {step}; run the same command to resume')
      if stopper.should_stop:
        logging.info('Early stopping at step %d: no %s improvement in %d evaluations.', step,
                     config.early_stopping_metric, config.early_stopping_patience)
    finally:
      writer.flush()
      checkpointer.close()
  return progress

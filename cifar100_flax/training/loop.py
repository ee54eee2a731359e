"""The training loop: resume, the jitted steps of states.py, periodic validation, early stopping,
checkpoints, and a clean stop on Ctrl-C or SIGTERM."""

import contextlib
import dataclasses
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cifar100_flax import console, files, hardware
from cifar100_flax.config import checks, loading
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.errors import TrainingDivergedError
from cifar100_flax.models import pretrained
from cifar100_flax.optim import optimizers, schedules
from cifar100_flax.training import (
  checkpoints,
  distillation,
  flops,
  processes,
  recalibration,
  sharding,
  states,
  steps,
  workdirs,
  writers,
)


def _signed(config: ml_collections.ConfigDict, value: float) -> float:
  mode = checks.EARLY_STOPPING_METRICS[config.early_stopping.metric]
  return -value if mode == 'max' else value


def _with_pretrained(state: states.TrainState,
                     config: ml_collections.ConfigDict) -> states.TrainState:
  """`state` with config.model.pretrained's weights for all but the classifier head ('fc')."""
  if not config.model.pretrained:
    return state
  variables = pretrained.fit_to_model(
      pretrained.load(config.model.pretrained, config.model.name),
      {'params': state.params, 'batch_stats': state.batch_stats}, keep=('fc',))
  logging.info('Initialised from %s (all but the head).', config.model.pretrained)
  return state.with_variables(variables['params'], variables['batch_stats'])


def _check_finite(values: dict, step: int) -> None:
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    raise TrainingDivergedError(
        f'training diverged at step {step}: {bad}. The last good checkpoint is kept; lower '
        f'config.optim.learning_rate or set config.optim.grad_clip_norm, then resume or start a '
        f'new workdir.')


class _StopRequests:
  """Turns Ctrl-C and SIGTERM (a cluster's preemption) into a flag read between steps.

  A KeyboardInterrupt raised inside a step could leave the state's buffers donated and unsaveable;
  with the flag, the loop finishes the step, saves a checkpoint and then stops. Several processes
  agree on it every POLL_STEPS steps (a signal may reach one of them only), so that all save the
  same step and stop together.
  """
  POLL_STEPS = 10

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
    console.say(f'\nsignal {signum}: stopping after this step (again to stop at once)')
    self.requested = True

  def agreed(self, step: int) -> bool:
    """Whether to stop after `step`: this process's request, or, of several, any one's."""
    if jax.process_count() == 1:
      return self.requested
    return step % self.POLL_STEPS == 0 and self.agreed_now()

  def agreed_now(self) -> bool:
    """Whether any process was asked to stop (every process must call this at the same point)."""
    return processes.any_process(self.requested)

  def stop_if_agreed(self, step: int) -> None:
    """Raises KeyboardInterrupt if a stop was asked for before training step `step` + 1, which
    leaves nothing new to save (outside the loop, e.g. while loading or compiling)."""
    if self.agreed_now():
      raise KeyboardInterrupt(f'stopped before training step {step + 1}, with nothing new to '
                              f'save; run the same command to {"resume" if step else "start"}')

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _image_size_at(config: ml_collections.ConfigDict, steps_per_epoch: int, step: int) -> int:
  """The side of training step `step` + 1's images (0: CIFAR's own)."""
  return preprocessing.train_image_size(config, step / steps_per_epoch)


@dataclasses.dataclass
class _Training:
  """What one session of training holds: the data, where results go and its clock."""
  config: ml_collections.ConfigDict
  splits: dict
  mesh: Any
  checkpointer: checkpoints.Checkpointer
  writer: Any
  steps_per_epoch: int
  total_steps: int
  step_flops: dict  # a step's FLOPs (None: not counted yet), by the side of its images
  resumed_seconds: float  # spent training in earlier sessions
  started: float = dataclasses.field(default_factory=time.time)

  def image_size_at(self, step: int) -> int:
    return _image_size_at(self.config, self.steps_per_epoch, step)

  def flops_until(self, step: int) -> float | None:
    """The FLOPs of steps 1 to `step`; None if a step's are unknown."""
    counts = [self.step_flops[self.image_size_at(k)] for k in range(step)]
    return None if None in counts else sum(counts)

  def count_compiled(self, size: int, compiled: jax.stages.Compiled) -> None:
    """Counts the FLOPs of the step for `size`-pixel images from its executable, if the lowered
    step had no count (accelerators' backends count only compiled code)."""
    if self.step_flops[size] is None:
      self.step_flops[size] = flops.compiled_flops(compiled)

  def evaluate_validation_split(self, jitted_eval_step, state: states.TrainState,
                                progress: states.Progress) -> states.Progress:
    """Progress after evaluating the validation split at the state's step."""
    config, step = self.config, int(state.step)
    val, _ = steps.evaluate_split(jitted_eval_step, states.model_to_evaluate(state),
                                  self.splits['validation'], config.eval.batch_size, self.mesh,
                                  'validation')
    val = {f'val_{k}': v for k, v in val.items()}
    _check_finite(val, step)
    stopper = progress.stopper.update(_signed(config, val[config.early_stopping.metric]))
    self.writer.write_scalars(step, {**val, 'epoch': step / self.steps_per_epoch})
    console.say(f'validation at step {step}: '
                + '  '.join(f'{k[4:]} {v:.4f}' for k, v in val.items())
                + ('  (best so far)' if stopper.has_improved else ''))
    if not stopper.has_improved:
      return dataclasses.replace(progress, stopper=stopper)
    return dataclasses.replace(progress, stopper=stopper, best_step=step,
                               best_metric=val[config.early_stopping.metric],
                               best_metric_name=config.early_stopping.metric)

  def recalibrated(self, state: states.TrainState, progress: states.Progress
                   ) -> tuple[states.TrainState, states.Progress]:
    """With config.eval.recalibration_images, the state whose evaluated model has recalibrated
    BatchNorm statistics (harmless to training, which normalises by each batch's own)."""
    config = self.config
    if not config.eval.recalibration_images:
      return state, progress
    model = recalibration.recalibrate(states.model_to_evaluate(state),
                                      self.splits['train'].images[:config.eval.recalibration_images],
                                      config, self.mesh)
    state = sharding.replicate(states.with_evaluated_batch_stats(state, model.batch_stats),
                               self.mesh)
    return state, dataclasses.replace(progress,
                                      recalibration=recalibration.record(config))

  def save(self, state: states.TrainState, progress: states.Progress,
           is_best: bool) -> states.Progress:
    """Progress with the time and FLOPs spent so far, saved with `state`."""
    step = int(state.step)
    progress = dataclasses.replace(
        progress, train_flops=self.flops_until(step),
        train_seconds=self.resumed_seconds + time.time() - self.started)
    self.checkpointer.save(state, progress.to_json(), is_best)
    return progress


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the final progress record.

  Raises KeyboardInterrupt after saving a checkpoint if stopped by Ctrl-C or SIGTERM. A workdir
  that cannot be written, or holds a run of another config, and a start from pretrained weights
  that cannot be had are refused before anything is read or written. While another process
  trains `workdir`, this one waits for it to end, then goes on from where it stopped.
  """
  _check_start(config, workdir)
  with _one_training_at_a_time(workdir) as waited:
    if waited:  # the training waited for has changed the run since it was checked
      _check_start(config, workdir)
    finished = _finished(config, workdir)
    if finished is not None:  # said before the data loads
      console.say(f'{workdir} has finished training (step {finished[0]} of '
                  f'{finished[1]["total_steps"]}): nothing left to train')
      _say_summary(workdir, finished[1])
      return finished[1]
    with _StopRequests() as stop:  # From here on a signal is a clean stop.
      progress = _train(config, workdir, stop)
  _say_summary(workdir, progress)
  return progress


def _check_start(config: ml_collections.ConfigDict, workdir: str) -> None:
  checks.validate(config)
  loading.check_start(config, workdir)
  workdirs.check_is_run(workdirs.check_path(workdir))
  files.writable_folder(workdir, 'the workdir')
  loading.check_resumable(config, workdir)
  distillation.check_teachers(config, workdir)


def _one_training_at_a_time(workdir: str) -> contextlib.AbstractContextManager[bool]:
  """Process 0 holds the workdir's lock for the run's processes. One process waits for another
  training of the workdir to end; several refuse it: their other processes, not told why, would
  stand meanwhile in their first collective."""
  if jax.process_index() != 0:
    return contextlib.nullcontext(False)
  return workdirs.training(pathlib.Path(workdir), wait=jax.process_count() == 1)


def _finished(config: ml_collections.ConfigDict, workdir: str) -> tuple[int, dict] | None:
  """The newest step and progress of a run in `workdir` that has nothing left to train (every
  step done, or stopped early), else None."""
  # Several processes would each restore the arrays without their sharding: they resume instead,
  # which finds the run finished after the data loads.
  if jax.process_count() > 1 or not pathlib.Path(workdir, 'checkpoints').is_dir():
    return None
  with checkpoints.Checkpointer(workdir, read_only=True) as checkpointer:
    newest = checkpointer.newest_progress()
    if newest is None:
      return None
    step, progress = newest
    # A checkpoint from before steps_per_epoch was saved resumes, and finds out, as it always did.
    total_steps = config.train.num_epochs * progress.get('steps_per_epoch', 0)
    done = progress.get('early_stopping', {}).get('should_stop') or 0 < total_steps <= step
    # Its arrays are read only for a finished run: a run to resume reads them once, restoring.
    if done and checkpointer.reads_whole(step):
      return step, {**progress, 'total_steps': total_steps}
  return None


def _say_summary(workdir: str, progress: dict) -> None:
  """Where the run stands and what to run next."""
  best, metric = progress.get('best_step'), progress.get('best_metric_name')
  line = 'training finished'
  if metric and progress.get('best_metric') is not None:
    line += f": best {metric.replace('_', ' ')} {progress['best_metric']:.4f} at step {best}"
  if progress.get('train_seconds'):
    line += f", {console.duration(progress['train_seconds'])} of training"
  folder = pathlib.Path(workdir, 'checkpoints')
  console.say(f'{line}\n  checkpoints: {folder} (the best, '
              f'step {best}, is the one evaluated)\n  next: python main.py --mode eval '
              f'--workdir {workdir}')


def _train(config: ml_collections.ConfigDict, workdir: str, stop: _StopRequests) -> dict:
  model = states.create_model(config)
  mesh = sharding.create_mesh()
  with console.phase(f'loading {config.data.name}'):
    splits = cifar100.source(config).load_splits(config)
  splits['train'] = distillation.with_teacher_targets(splits['train'], config, workdir)
  steps_per_epoch = cifar100.steps_per_epoch(len(splits['train']), config.data.batch_size)
  total_steps = config.train.num_epochs * steps_per_epoch
  state, schedule = states.create_train_state(
      config, steps_per_epoch, splits['train'].images[:config.model.init_sample_size], model)
  with checkpoints.Checkpointer(workdir, config.checkpoint.keep) as checkpointer:
    restored = checkpointer.restore_latest(state)
    if restored:
      state, progress = restored[0], states.Progress.from_json(restored[1], config)
      console.say(f'resuming from step {int(state.step)} of {total_steps}')
    else:
      state = _with_pretrained(state, config)
      progress = states.Progress(stopper=states.early_stopper(config))
    progress = dataclasses.replace(progress, hardware=_hardware_since(progress.hardware))
    if jax.process_index() == 0:  # For --mode report and ensembles, which need no --config.
      files.write_text(pathlib.Path(workdir) / 'config.json', loading.to_record(config, workdir))
    state = sharding.replicate(state, mesh)
    with console.phase('counting the training step\'s FLOPs'):
      sizes = {_image_size_at(config, steps_per_epoch, k) for k in range(total_steps)}
      step_flops = {size: flops.flops_per_step(config, state, config.data.batch_size, size)
                    for size in sizes}
    writer = writers.create_writer(workdir, config, int(state.step),
                                   tensorboard=config.data.name != 'synthetic')
    run = _Training(config, splits, mesh, checkpointer, writer, steps_per_epoch, total_steps,
               step_flops, progress.train_seconds)
    total_flops = run.flops_until(total_steps)
    per_image = ('' if total_flops is None else
                 f', {total_flops / total_steps / config.data.batch_size:.3g} training FLOPs '
                 f'per image')
    console.say(f'{config.model.name} ({sum(x.size for x in jax.tree.leaves(state.params)):,} '
                f'parameters, {model.layers.name}{per_image}) on '
                f'{console.plural(jax.device_count(), jax.default_backend() + " device")}: '
                f'{total_steps} steps of {config.data.batch_size} images, {steps_per_epoch} an '
                f'epoch')
    try:
      progress = _loop(run, state, dataclasses.replace(
          progress, total_steps=total_steps, steps_per_epoch=steps_per_epoch), schedule, stop)
    finally:
      writer.close()
  return progress.to_json()


def _hardware_since(before: str | None) -> str:
  now = hardware.describe()
  return now if before in (None, now) or before.endswith(f' then {now}') else f'{before} then {now}'


def _logs_at(step: int, every: int, total_steps: int, since: int = 0) -> bool:
  """Whether `step` ends a log period that began after step `since`: every `every` steps, and
  the last; a period shorter than every / 2 steps (the first after resuming, or one that would
  leave so few to the last) joins the next, so that no logged point averages a few steps only."""
  return step == total_steps or (step % every == 0 and step - since >= every / 2
                                 and total_steps - step >= every / 2)


def _loop(run: _Training, state: states.TrainState, progress: states.Progress,
          schedule: schedules.Schedule, stop: _StopRequests) -> states.Progress:
  config, step = run.config, int(state.step)
  logged = step
  batches = cifar100.source(config).train_batches(
      run.splits['train'], config.data.batch_size, config.data.shuffle_seed, step,
      jax.process_index(), jax.process_count())
  batches = (sharding.shard_batch(batch, run.mesh) for batch in batches)
  jitted_eval_step = steps.jit_eval_step(config)
  eval_every = config.eval.every_steps or run.steps_per_epoch
  line = console.TrainingLine(run.total_steps, run.steps_per_epoch, config.data.batch_size,
                             hardware.peak_flops_per_device(config.model.dtype))
  train_metrics, stopping = None, False
  train_steps = {}  # compiled, by image side
  stop.stop_if_agreed(step)  # asked while loading, restoring or counting
  while step < run.total_steps and not progress.stopper.should_stop and not stopping:
    batch = next(batches)
    size = run.image_size_at(step)
    if size not in train_steps:
      with console.phase('compiling the training step'
                         + (f' for {size}-pixel images' if config.data.image_size_schedule
                            else '')):
        train_steps[size] = steps.jit_train_step(config, run.mesh, size).lower(
            state, batch).compile()
      run.count_compiled(size, train_steps[size])
      stop.stop_if_agreed(step)
    state, step_metrics = train_steps[size](state, batch)
    step += 1
    line.first_step_done(step)
    train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
    if _logs_at(step, config.train.log_every_steps, run.total_steps, logged):
      scalars = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
      _check_finite(scalars, step)
      scalars['learning_rate'] = float(schedule(step - 1)
                                       * optimizers.plateau_scale(state.opt_state))
      run.writer.write_scalars(step, scalars)
      console.say(line.format(step, scalars, run.step_flops[size]))
      train_metrics, logged = None, step
    if step % eval_every == 0 or step == run.total_steps:
      state, progress = run.recalibrated(state, progress)
      if len(run.splits['validation']):
        progress = run.evaluate_validation_split(jitted_eval_step, state, progress)
        progress = run.save(state, progress, is_best=progress.stopper.has_improved)
      else:  # Every training image is trained on: the newest model is the one to evaluate.
        run.writer.write_scalars(step, {'epoch': step / run.steps_per_epoch})
        progress = run.save(state, dataclasses.replace(progress, best_step=step), is_best=True)
    stopping = stop.agreed(step)
  if stopping:
    run.save(state, progress, is_best=False)
    raise KeyboardInterrupt(f'stopped at step {step}, saved; run the same command to resume')
  if progress.stopper.should_stop:
    console.say(f'early stopping at step {step}: no {config.early_stopping.metric} improvement '
                f'in {config.early_stopping.patience} evaluations')
  return progress

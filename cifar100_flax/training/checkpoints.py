"""Orbax checkpoints: the latest N for resuming and, apart, the best by the validation metric.

Two managers rather than one with `best_fn`: a single manager ranking by metric may delete the
newest checkpoint (orbax#526), and resuming needs the newest. Each checkpoint holds the train state
(params, batch statistics, optimiser state, step, RNG) and a JSON `progress` record (early stopping,
best metric, wall time). Orbax writes to a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. Resume reads `latest` whole; evaluation
reads only the parameters, batch statistics and step of `best` (or of `latest` if no evaluation
has happened yet), so that a change to an optimiser-only key does not stop a run evaluating.

A checkpoint that cannot be read (a damaged file) is passed over for the newest one that can,
saying so; in training it is moved to `checkpoints/unreadable/`, kept but out of the way.
"""

import pathlib
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cifar100_flax import console, files
from cifar100_flax.errors import CheckpointError
from cifar100_flax.training import sharding


def _first_line(error: BaseException, limit: int = 300) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:limit] if text else ""}'


def _check_fits(restored: Any, abstract: Any, path: pathlib.Path) -> None:
  """Raises CheckpointError naming the arrays whose shapes differ from the model's (a partial
  restore takes them as saved)."""
  shapes = lambda tree: {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf
                         in jax.tree_util.tree_flatten_with_path(tree)[0]}
  got, wanted = shapes(restored), shapes(abstract)
  differ = [f'{key} {got.get(key)} (the model has {shape})' for key, shape in wanted.items()
            if got.get(key) != shape]
  if differ:
    more = f' and {len(differ) - 3} more' if len(differ) > 3 else ''
    raise CheckpointError(f'the checkpoint {path} was written for another model or config: '
                          f'{"; ".join(differ[:3])}{more}. Use the config that wrote it (its '
                          f'config.json), or a new --workdir.')


def _abstract(template: Any) -> Any:
  """The shapes of `template` to restore into, replicated over every device of every process (as
  the train state is): orbax would otherwise restore onto a default device, which the other
  processes cannot address."""
  everywhere = sharding.replicated(sharding.create_mesh())

  def replicated(leaf):
    shaped = ocp.utils.to_shape_dtype_struct(leaf)
    if not isinstance(shaped, jax.ShapeDtypeStruct):  # a Python number
      return shaped
    return jax.ShapeDtypeStruct(shaped.shape, shaped.dtype, sharding=everywhere)
  return jax.tree_util.tree_map(replicated, template)


def _manager(directory: pathlib.Path, max_to_keep: int, read_only: bool) -> ocp.CheckpointManager:
  # The managers' barriers between processes are named by step and phase only; without a prefix
  # of their own, the two managers' (latest, best) meet each other's and deadlock.
  processes = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         cleanup_tmp_directories=not read_only,
                                         multiprocessing_options=processes)
  manager = ocp.CheckpointManager(directory.absolute(), options=options)
  # The manager removes unfinished saves of an earlier run in a thread it starts here and awaits
  # only at its first save: a run that stops before that (a user error, Ctrl-C while starting)
  # would exit with the thread still scheduling work, and print its traceback. Orbax has no public
  # way to await it.
  manager._maybe_await_cleanup_tmp_directory()
  return manager


class Checkpointer:
  """Saves and restores (train state, progress) pairs under `workdir/checkpoints`; a context
  manager, which waits for the last save and stops Orbax's threads on the way out."""

  def __init__(self, workdir: str, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(workdir) / 'checkpoints'
    try:
      self.latest = _manager(self.directory / 'latest', keep, read_only)
      self.best = _manager(self.directory / 'best', 1, read_only)
    except OSError as e:
      raise CheckpointError(f'cannot open the checkpoints in {self.directory}: '
                            f'{files.OS_ERRORS.get(e.errno, _first_line(e))}') from e

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, kind, error, traceback) -> None:
    if error is None:
      self.close()
      return
    try:  # Already failing: close without hiding that error behind another.
      self.close()
    except Exception:
      pass

  def _writing(self, call: Callable, *args, **kwargs):
    """`call(*args, **kwargs)`, with a disk or permission error told as what it is."""
    try:
      return call(*args, **kwargs)
    except Exception as e:  # orbax wraps OSErrors of its writer threads in many types.
      os_error = files.known_os_error(e)
      if os_error is None:
        raise
      raise CheckpointError(f'cannot write the checkpoint in {self.directory}: '
                            f'{files.OS_ERRORS[os_error.errno]} ({os_error}). The previous '
                            f'checkpoint is intact; run the same command again to resume from '
                            f'it.') from e

  def save(self, state: Any, progress: dict, is_best: bool) -> None:
    step = int(jax.device_get(state.step))
    managers = [self.latest, self.best] if is_best else [self.latest]
    for manager in managers:
      if manager.latest_step() != step:
        self._writing(manager.save, step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)))

  def _restore_step(self, manager: ocp.CheckpointManager, step: int,
                    state_args: ocp.args.CheckpointArgs) -> tuple[Any, dict]:
    path = manager.directory / str(step)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=state_args, progress=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; say which kind of failure it is.
      os_error = files.known_os_error(e)
      if os_error is not None:
        why = files.OS_ERRORS[os_error.errno]
      elif isinstance(e, (ValueError, KeyError, TypeError)) and 'shape' in str(e).lower():
        why = ('it was written for another model or config. Use the config that wrote it '
               '(its config.json), or a new --workdir')
      else:
        raise _Unreadable(path, e) from e
      raise CheckpointError(f'cannot restore the checkpoint {path}: {why} ({_first_line(e)})'
                            ) from e
    return restored['state'], restored['progress']

  def _restore_newest_readable(self, manager: ocp.CheckpointManager,
                               state_args: ocp.args.CheckpointArgs
                               ) -> tuple[tuple[int, Any, dict] | None, list[int]]:
    """(step, state, progress) of the newest checkpoint of `manager` that reads (None if it has
    none), and the newer steps that did not read, each said. Raises CheckpointError if there are
    checkpoints and none reads."""
    unreadable, last_error = [], None
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        return (step, *self._restore_step(manager, step, state_args)), unreadable
      except _Unreadable as e:
        unreadable.append(step)
        last_error = e
        console.say(f'checkpoint {step} of {manager.directory} cannot be read ({e.why}); '
                    f'trying the one before it')
    if unreadable:
      raise NoReadableCheckpoint(
          f'no checkpoint in {manager.directory} can be read (steps '
          f'{", ".join(map(str, unreadable))}): they are damaged or not checkpoints of this '
          f'project. Train in a new --workdir, or put back the files from a copy; nothing here '
          f'was changed.') from last_error
    return None, []

  def _set_aside(self, manager: ocp.CheckpointManager, step: int) -> None:
    """Moves checkpoint `step` to checkpoints/unreadable/, where orbax neither reads nor
    deletes it, so that a new save of that step can take its place."""
    if jax.process_index() == 0:
      aside = self.directory / 'unreadable' / f'{manager.directory.name}_{step}'
      aside.parent.mkdir(exist_ok=True)
      (manager.directory / str(step)).rename(aside)
      console.say(f'moved checkpoint {step} to {aside}')
    if jax.process_count() > 1:  # the others look again once it has moved
      multihost_utils.sync_global_devices(f'set aside {manager.directory} {step}')
    manager.reload()

  def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
    """The newest readable checkpoint shaped like `template` (a whole train state), or None in a
    fresh workdir; the unreadable ones after it are set aside."""
    restored, unreadable = self._restore_newest_readable(
        self.latest, ocp.args.StandardRestore(_abstract(template)))
    for step in unreadable:
      self._set_aside(self.latest, step)
    return None if restored is None else restored[1:]

  def restore_model(self, template: dict) -> tuple[dict, dict]:
    """The entries of `template` ({'params': ..., 'batch_stats': ..., 'step': ...}, arrays or
    shapes) from the best checkpoint, or the newest if none is marked best or it cannot be read,
    and its progress.

    The optimiser's state is neither read nor checked against the config.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)  # host arrays
    args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
    restored = None
    if self.best.latest_step() is not None:
      try:
        restored, _ = self._restore_newest_readable(self.best, args)
        manager = self.best
      except NoReadableCheckpoint:
        console.say(f'the best checkpoint cannot be read: evaluating the newest readable one of '
                    f'{self.latest.directory} instead')
    if restored is None:
      manager = self.latest
      restored, _ = self._restore_newest_readable(self.latest, args)
    if restored is None:
      raise CheckpointError(f'no checkpoint in {self.directory}: train first with --mode train '
                            f'and the same --workdir')
    step, state, progress = restored
    if manager is self.latest and progress.get('best_step') not in (None, step):
      console.say(f'no best checkpoint in {self.best.directory} (the best was step '
                  f'{progress["best_step"]}): evaluating step {step} of latest instead')
    _check_fits(state, abstract, manager.directory / str(step))
    return state, progress

  def close(self) -> None:
    for manager in (self.latest, self.best):
      self._writing(manager.wait_until_finished)
      manager.close()


class NoReadableCheckpoint(CheckpointError):
  """There are checkpoints, and none of them can be read."""


class _Unreadable(Exception):
  """A checkpoint whose files cannot be read as one (damaged, truncated, foreign)."""

  def __init__(self, path: pathlib.Path, error: BaseException):
    super().__init__(f'{path}: {_first_line(error)}')
    self.why = _first_line(error)

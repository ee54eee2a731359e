"""Orbax checkpoints: one CheckpointManager under `workdir/checkpoints/<step>`, which keeps the
newest N (for resuming) and the best (for evaluation).

Each save is written once, with Orbax's metric `best`: the step itself where the early stopper
marked an improvement (or, without a validation split, the newest model), else -1. The
preservation policy keeps `LatestN(keep)` and `BestN(1)` by that metric, so the best checkpoint
is the newest improvement, as the training loop's `best_step` says, and never deleted while it
is. A checkpoint holds the train state (params, batch statistics, optimiser state, step, RNG)
and a JSON `progress` record (early stopping, best metric, wall time). Orbax writes to a
temporary folder and renames it when complete, so a run killed mid-save leaves the previous
checkpoint intact. Resume reads the newest whole; evaluation reads only the parameters, batch
statistics and step of the best, so that a change to an optimiser-only key does not stop a run
evaluating.

A checkpoint whose files are recognised as damaged (metadata that does not parse, data that
tensorstore reports lost or missing, a progress record that states.progress_problem refuses) is
passed over for the newest one that can be read, saying so; in training it is moved to
`checkpoints/unreadable/`, kept but out of the way. Any other error stops with the checkpoint
untouched. Workdirs written before this layout
(`checkpoints/latest/<step>`, `checkpoints/best/<step>`) are read as they are; a resumed one
saves in the new layout from then on.
"""

import json
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from cifar100_flax import console, files
from cifar100_flax.errors import CheckpointError
from cifar100_flax.training import sharding, states, workdirs

_TRIES, _PAUSE_SECONDS = 10, 0.5  # reading a run being trained (Checkpointer._retrying)
NOT_BEST = -1  # the `best` metric of a checkpoint that is not an improvement
LEGACY = ('best', 'latest')  # the two managers' folders before one manager kept both
# tensorstore's status codes (the start of its errors' messages) for bytes that cannot be decoded
# or files that are gone: a damaged checkpoint, not a failure of this process.
_DAMAGE_STATUS = ('DATA_LOSS', 'NOT_FOUND', 'OUT_OF_RANGE')


def _first_line(error: BaseException, limit: int = 300) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:limit] if text else ""}'


def _chain(error: BaseException | None) -> Iterator[BaseException]:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_damage(error: BaseException) -> bool:
  """Whether `error` (or a cause of it) says a checkpoint's files are damaged: metadata that does
  not parse, a file that is missing, or data tensorstore reports lost."""
  for cause in _chain(error):
    if isinstance(cause, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
      return True
    if isinstance(cause, ValueError) and str(cause).split(':', 1)[0] in _DAMAGE_STATUS:
      return True
  return False


def _shapes(tree: Any) -> dict[str, tuple]:
  # 'params/Conv_0/kernel' alike for a saved dict and a state's attributes.
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, 'shape')}


def _check_fits(saved: Any, abstract: Any, path: pathlib.Path) -> None:
  """Raises CheckpointError naming the arrays whose saved shapes differ from the model's (Orbax
  restores an array of another shape without a word)."""
  got, wanted = _shapes(saved), _shapes(abstract)
  differ = [f'{key} {got.get(key)} (the model has {shape})' for key, shape in wanted.items()
            if got.get(key) != shape]
  if differ:
    more = f' and {len(differ) - 3} more' if len(differ) > 3 else ''
    raise CheckpointError(f'the checkpoint {path} was written for another model or config: '
                          f'{"; ".join(differ[:3])}{more}. Use the config that wrote it (its '
                          f'config.json), or a new --workdir.')


def _saved_shapes(item: pathlib.Path) -> Any:
  """The tree of a saved item's array metadata (shapes and dtypes), read without its data."""
  metadata = ocp.PyTreeCheckpointHandler().metadata(item)
  if metadata is None:  # Orbax's answer where the metadata file does not parse
    raise _Damaged(item.parent, ValueError(f'the metadata of {item} cannot be read'))
  return metadata.tree


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


def _best_metric(metrics: dict) -> float:
  return metrics['best']


def _manager(directory: pathlib.Path, keep: int, read_only: bool) -> ocp.CheckpointManager:
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=_best_metric, n=1,
                                keep_checkpoints_without_metrics=False)])
  # best_fn: Orbax writes a save's metrics, and finds the best step, only with one.
  # (Not Orbax's read_only: it warns of itself on every open. Nothing here saves when reading.)
  options = ocp.CheckpointManagerOptions(best_fn=_best_metric, preservation_policy=policy,
                                         create=not read_only)
  return ocp.CheckpointManager(directory.absolute(), options=options)


def _remove_unfinished(directory: pathlib.Path) -> None:
  """Removes the temporary folders of saves that never finished (a killed run): Orbax never reads
  them, and they would hold their disk space for good."""
  if jax.process_index() == 0 and directory.is_dir():
    for unfinished in filter(ocp.utils.is_tmp_checkpoint, directory.iterdir()):
      shutil.rmtree(unfinished, ignore_errors=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'unfinished checkpoints removed from {directory}')


class Checkpointer:
  """Saves and restores (train state, progress) pairs under `workdir/checkpoints`; a context
  manager, which waits for the last save and stops Orbax's threads on the way out."""

  def __init__(self, workdir: str, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(workdir) / 'checkpoints'
    # A reader of a run being trained meets checkpoints that are deleted as it reads them.
    self.moving = read_only and workdirs.being_trained(workdir)
    self.manager, self.legacy = None, {}
    if not read_only:
      _remove_unfinished(self.directory)
    self._retrying(self._open, keep, read_only)

  def _open(self, keep: int, read_only: bool) -> None:
    try:
      self.manager = _manager(self.directory, keep, read_only)
      self.legacy = {name: _manager(self.directory / name, 1, read_only=True)
                     for name in LEGACY if (self.directory / name).is_dir()}
    except OSError as e:
      raise CheckpointError(f'cannot open the checkpoints in {self.directory}: '
                            f'{files.OS_ERRORS.get(e.errno, _first_line(e))}') from e

  def _retrying(self, call: Callable, *args) -> Any:
    """`call(*args)`; while the run is being trained, a failure (most likely a checkpoint that
    the training deleted meanwhile) is tried again after a pause; the last of _TRIES reads as in
    a run at rest, falling back past damaged checkpoints."""
    being_trained = self.moving
    for attempt in range(1, _TRIES + 1):
      self.moving = being_trained and attempt < _TRIES
      try:
        return call(*args)
      except (CheckpointError, _Damaged):
        if not self.moving:
          raise
      time.sleep(_PAUSE_SECONDS)
      for manager in filter(None, (self.manager, *self.legacy.values())):
        manager.reload()
    raise AssertionError('the last try returns or raises')

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
    """Saves `state` and `progress` at the state's step, once (a second call at the same step,
    as at the end of a run that was just validated, keeps the first)."""
    step = int(jax.device_get(state.step))
    if self.manager.latest_step() != step:
      self._writing(self.manager.save, step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)),
                    metrics={'best': step if is_best else NOT_BEST})

  def _restore_step(self, manager: ocp.CheckpointManager, step: int,
                    state_args: ocp.args.CheckpointArgs, abstract: Any) -> tuple[Any, dict]:
    path = manager.directory / str(step)
    try:
      _check_fits(_saved_shapes(path / 'state'), abstract, path)
      restored = manager.restore(step, args=ocp.args.Composite(
          state=state_args, progress=ocp.args.JsonRestore()))
    except (CheckpointError, _Damaged):
      raise
    except Exception as e:  # orbax raises many types; say which kind of failure it is.
      if is_damage(e):
        raise _Damaged(path, e) from e
      os_error = files.known_os_error(e)
      why = (files.OS_ERRORS[os_error.errno] if os_error is not None
             else 'nothing was changed; --traceback shows the error whole')
      raise CheckpointError(f'cannot restore the checkpoint {path}: {why} ({_first_line(e)})'
                            ) from e
    problem = states.progress_problem(restored['progress'])
    if problem:  # JSON that parses but cannot be the loop's: as damaged as JSON that does not
      raise _Damaged(path, ValueError(problem))
    return restored['state'], restored['progress']

  def _restore_newest_readable(self, manager: ocp.CheckpointManager,
                               state_args: ocp.args.CheckpointArgs, abstract: Any,
                               steps: list[int] | None = None
                               ) -> tuple[tuple[int, Any, dict] | None, list[int]]:
    """(step, state, progress) of the newest of `steps` (default: all of `manager`'s) that reads
    (None if there are none), and the newer steps found damaged, each said. Raises
    NoReadableCheckpoint if there are checkpoints and every one is damaged."""
    damaged, last_error = [], None
    for step in sorted(manager.all_steps() if steps is None else steps, reverse=True):
      try:
        return (step, *self._restore_step(manager, step, state_args, abstract)), damaged
      except _Damaged as e:
        damaged.append(step)
        last_error = e
        if self.moving:  # deleted by the training, most likely: tried again whole
          raise
        console.say(f'checkpoint {step} of {manager.directory} cannot be read ({e.why}); '
                    f'trying the one before it')
    if damaged:
      raise NoReadableCheckpoint(
          f'no checkpoint in {manager.directory} can be read (steps '
          f'{", ".join(map(str, damaged))}): they are damaged or not checkpoints of this '
          f'project. Train in a new --workdir, or put back the files from a copy; nothing here '
          f'was changed.') from last_error
    return None, []

  def _set_aside(self, step: int) -> None:
    """Moves damaged checkpoint `step` to checkpoints/unreadable/, where orbax neither reads nor
    deletes it, so that a new save of that step can take its place."""
    if jax.process_index() == 0:
      aside = self.directory / 'unreadable' / str(step)
      aside.parent.mkdir(exist_ok=True)
      shutil.rmtree(aside, ignore_errors=True)  # one set aside at this step before
      (self.directory / str(step)).rename(aside)
      console.say(f'moved checkpoint {step} to {aside}')
    if jax.process_count() > 1:  # the others look again once it has moved
      multihost_utils.sync_global_devices(f'set aside {self.directory} {step}')
    self.manager.reload()

  def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
    """The newest readable checkpoint shaped like `template` (a whole train state), or None in a
    fresh workdir; the damaged ones after it are set aside."""
    abstract = _abstract(template)
    args = ocp.args.StandardRestore(abstract)
    restored, damaged = self._restore_newest_readable(self.manager, args, abstract)
    for step in damaged:
      self._set_aside(step)
    if restored is None and 'latest' in self.legacy:  # a run of the two-folder layout
      restored, _ = self._restore_newest_readable(self.legacy['latest'], args, abstract)
    return None if restored is None else restored[1:]

  def _best(self) -> tuple[ocp.CheckpointManager, int] | None:
    """The manager and step of the best checkpoint, if one is marked."""
    step = self.manager.best_step()
    if step is not None and self.manager.metrics(step)['best'] != NOT_BEST:
      return self.manager, step
    legacy = self.legacy.get('best')
    if legacy is not None and legacy.latest_step() is not None:
      return legacy, legacy.latest_step()
    return None

  def _newest(self) -> ocp.CheckpointManager:
    """The manager that holds the newest checkpoints."""
    if self.manager.latest_step() is None and 'latest' in self.legacy:
      return self.legacy['latest']
    return self.manager

  def newest_progress(self) -> tuple[int, dict] | None:
    """The step and saved progress of the newest checkpoint, read without its arrays; None in a
    fresh workdir or where it cannot be read (restore_latest then sets it aside, or says why)."""
    step = self._newest().latest_step()
    restored = None if step is None else self._read_whole(step, progress=ocp.args.JsonRestore())
    if restored is None or states.progress_problem(restored['progress']):
      return None
    return step, restored['progress']

  def reads_whole(self, step: int) -> bool:
    """Whether checkpoint `step`'s train state reads whole (restored as saved, without a model
    to shape it: no data is needed)."""
    return self._read_whole(step, state=ocp.args.StandardRestore()) is not None

  def _read_whole(self, step: int, **items: ocp.args.CheckpointArgs) -> Any:
    try:
      return self._newest().restore(step, args=ocp.args.Composite(**items))
    except Exception:  # damaged or foreign: restore_latest sets it aside or says why, in full
      return None

  def restore_model(self, template: dict) -> tuple[dict, dict]:
    """The entries of `template` ({'params': ..., 'batch_stats': ..., 'step': ...}, arrays or
    shapes) from the best checkpoint, or the newest if none is marked best or it cannot be read,
    and its progress.

    The optimiser's state is neither read nor checked against the config. In a run being trained
    now, a checkpoint deleted as it is read makes it read the then best one.
    """
    return self._retrying(self._restore_model, template)

  def _restore_model(self, template: dict) -> tuple[dict, dict]:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)  # host arrays
    args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
    restored, best = None, self._best()
    if best is not None:
      manager, step = best
      try:
        restored, _ = self._restore_newest_readable(manager, args, abstract, [step])
      except NoReadableCheckpoint:
        if self.moving:
          raise
        console.say(f'the best checkpoint cannot be read: evaluating the newest readable one of '
                    f'{self.directory} instead')
    if restored is None:
      manager = self._newest()
      restored, _ = self._restore_newest_readable(manager, args, abstract)
    if restored is None:
      raise CheckpointError(f'no checkpoint in {self.directory}: train first with --mode train '
                            f'and the same --workdir')
    step, state, progress = restored
    if best is None and progress.get('best_step') not in (None, step):
      console.say(f'no best checkpoint in {self.directory} (the best was step '
                  f'{progress["best_step"]}): evaluating step {step} instead')
    return state, progress

  def close(self) -> None:
    for manager in (self.manager, *self.legacy.values()):
      self._writing(manager.wait_until_finished)
      manager.close()


class NoReadableCheckpoint(CheckpointError):
  """There are checkpoints, and every one of them is damaged."""


class _Damaged(Exception):
  """A checkpoint whose files are recognised as damaged (see `is_damage`)."""

  def __init__(self, path: pathlib.Path, error: BaseException):
    super().__init__(f'{path}: {_first_line(error)}')
    self.why = _first_line(error)

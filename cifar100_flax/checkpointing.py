"""Orbax checkpoints: the latest N for resuming and, apart, the best by the validation metric.

Two managers rather than one with `best_fn`: a single manager ranking by metric may delete the
newest checkpoint (orbax#526), and resuming needs the newest. Each checkpoint holds the train state
(params, batch statistics, optimiser state, step, RNG) and a JSON `progress` record (early stopping,
best metric, wall time). Orbax writes to a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. Resume reads `latest` whole; evaluation
reads only the parameters, batch statistics and step of `best` (or of `latest` if no evaluation
has happened yet), so that a change to an optimiser-only key does not stop a run evaluating.
"""

import errno
import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from cifar100_flax import sharding
from cifar100_flax.errors import CheckpointError

# errno -> what it means for a checkpoint, and what to do.
_OS_ERRORS = {
    errno.ENOSPC: 'the disk is full: free some space',
    errno.EDQUOT: 'the disk quota is exceeded: free some space',
    errno.EACCES: 'permission denied: make the workdir readable and writable, or use another',
    errno.EPERM: 'permission denied: make the workdir readable and writable, or use another',
    errno.EROFS: 'the file system is read-only: use a --workdir on a writable one',
}


def _os_error(error: BaseException) -> Optional[OSError]:
  """The first OSError with a known errno in `error`'s chain of causes, if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _OS_ERRORS:
      return error
    error = error.__cause__ or error.__context__
  return None


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
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
  """Saves and restores (train state, progress) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(workdir) / 'checkpoints'
    try:
      self.latest = _manager(self.directory / 'latest', keep, read_only)
      self.best = _manager(self.directory / 'best', 1, read_only)
    except OSError as e:
      raise CheckpointError(f'cannot open the checkpoints in {self.directory}: '
                            f'{_OS_ERRORS.get(e.errno, _first_line(e))}') from e

  def _writing(self, call, *args, **kwargs):
    """`call(*args, **kwargs)`, with a disk or permission error told as what it is."""
    try:
      return call(*args, **kwargs)
    except Exception as e:  # orbax wraps OSErrors of its writer threads in many types.
      os_error = _os_error(e)
      if os_error is None:
        raise
      raise CheckpointError(f'cannot write the checkpoint in {self.directory}: '
                            f'{_OS_ERRORS[os_error.errno]} ({os_error}). The previous checkpoint '
                            f'is intact; run the same command again to resume from it.') from e

  def save(self, state: Any, progress: dict, is_best: bool) -> None:
    step = int(jax.device_get(state.step))
    managers = [self.latest, self.best] if is_best else [self.latest]
    for manager in managers:
      if manager.latest_step() != step:
        self._writing(manager.save, step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)))

  def _restore(self, manager: ocp.CheckpointManager, state_args: ocp.args.CheckpointArgs
               ) -> Optional[tuple[Any, dict]]:
    step = manager.latest_step()
    if step is None:
      return None
    path = manager.directory / str(step)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=state_args, progress=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; say which kind of failure it is.
      os_error = _os_error(e)
      if os_error is not None:
        why = _OS_ERRORS[os_error.errno]
      elif isinstance(e, (ValueError, KeyError, TypeError)) and 'shape' in str(e).lower():
        why = ('it was written for another model or config. Use the config that wrote it '
               '(its config.json), or a new --workdir')
      else:
        why = ('it is corrupt or was written for another model or config. Use a new --workdir, '
               'or the config that wrote it')
      raise CheckpointError(f'cannot restore the checkpoint {path}: {why} ({_first_line(e)})'
                            ) from e
    return restored['state'], restored['progress']

  def restore_latest(self, template: Any) -> Optional[tuple[Any, dict]]:
    """The newest checkpoint shaped like `template` (a whole train state), or None in a fresh
    workdir."""
    abstract = _abstract(template)
    return self._restore(self.latest, ocp.args.StandardRestore(abstract))

  def restore_model(self, template: dict) -> tuple[dict, dict]:
    """The entries of `template` ({'params': ..., 'batch_stats': ..., 'step': ...}, arrays or
    shapes) from the best checkpoint, or the newest if none is marked best, and its progress.

    The optimiser's state is neither read nor checked against the config.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)  # host arrays
    args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
    manager = self.best if self.best.latest_step() is not None else self.latest
    restored = self._restore(manager, args)
    if restored is None:
      raise CheckpointError(f'no checkpoint in {self.directory}: train first with --mode train '
                            f'and the same --workdir')
    _check_fits(restored[0], abstract, manager.directory / str(manager.latest_step()))
    return restored

  def close(self) -> None:
    for manager in (self.latest, self.best):
      self._writing(manager.wait_until_finished)
      manager.close()

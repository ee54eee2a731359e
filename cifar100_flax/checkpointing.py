"""Orbax checkpoints: the latest N for resuming and, apart, the best by the validation metric.

Two managers rather than one with `best_fn`: a single manager ranking by metric may delete the
newest checkpoint (orbax#526), and resuming needs the newest. Each checkpoint holds the train state
(params, batch statistics, optimiser state, step, RNG) and a JSON `progress` record (early stopping,
best metric, wall time). Orbax writes to a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. Resume reads `latest`; eval reads `best`,
or `latest` if no evaluation has happened yet.
"""

import pathlib
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from cifar100_flax.errors import CheckpointError


def _manager(directory: pathlib.Path, max_to_keep: int, read_only: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
  """Saves and restores (train state, progress) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 2, read_only: bool = False):
    self.directory = pathlib.Path(workdir) / 'checkpoints'
    self.latest = _manager(self.directory / 'latest', keep, read_only)
    self.best = _manager(self.directory / 'best', 1, read_only)

  def save(self, state: Any, progress: dict, is_best: bool) -> None:
    step = int(jax.device_get(state.step))
    managers = [self.latest, self.best] if is_best else [self.latest]
    for manager in managers:
      if manager.latest_step() != step:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)))

  def _restore(self, manager: ocp.CheckpointManager, template: Any) -> Optional[tuple[Any, dict]]:
    step = manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean the same to the user.
      raise CheckpointError(
          f'cannot restore the checkpoint {manager.directory / str(step)}: it is corrupt or was '
          f'written for another model or config ({type(e).__name__}: {str(e)[:300]}). Use a new '
          f'--workdir, or the config that wrote it.') from None
    return restored['state'], restored['progress']

  def restore_latest(self, template: Any) -> Optional[tuple[Any, dict]]:
    """The newest checkpoint shaped like `template`, or None in a fresh workdir."""
    return self._restore(self.latest, template)

  def restore_for_eval(self, template: Any) -> tuple[Any, dict]:
    restored = self._restore(self.best, template) or self._restore(self.latest, template)
    if restored is None:
      raise CheckpointError(f'no checkpoint in {self.directory}: train first with --mode train '
                            f'and the same --workdir')
    return restored

  def close(self) -> None:
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()

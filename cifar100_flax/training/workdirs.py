"""What makes a folder a workdir: a path Orbax can keep checkpoints under, a folder that is empty
or holds a run of this project, and one training at a time (a lock the system drops with the
process that held it: a second training waits for it)."""

import contextlib
import fcntl
import glob
import json
import os
import pathlib
import socket
from collections.abc import Iterator

from cifar100_flax import console, files
from cifar100_flax.config import defaults, loading
from cifar100_flax.errors import UsageError

LOCK = 'training.lock'  # held (flock) by the training process; holds its pid and host
# A distilled run's teachers' predictions (training/distillation.py), which a new run may be
# given before its first start, copied from a run with the same teachers (of its images or more).
TEACHER_PREDICTIONS = 'teacher_predictions.npz'
_held: set[pathlib.Path] = set()  # the locks this process holds


def check_path(workdir: str) -> pathlib.Path:
  """`workdir` as a path, refused if it cannot hold checkpoints: Orbax finds a checkpoint's parts
  again by glob over the absolute path, so '*', '?' or '[' in any folder of it make checkpoints
  that save without error and never read back (or read another run's parts)."""
  if not workdir:
    raise UsageError('--workdir is empty: name the folder of the run, e.g. --workdir=runs/cnn')
  path = pathlib.Path(workdir)
  absolute = str(path.absolute())
  if glob.has_magic(absolute):
    magic = sorted({c for c in absolute if c in '*?['})
    raise UsageError(f'the workdir {absolute} holds {" and ".join(map(repr, magic))}, which '
                     f'Orbax reads as a pattern: its checkpoints would never read back. Use a '
                     f'path without * ? [ (e.g. {_plain(absolute)})')
  return path


def _plain(path: str) -> str:
  return path.translate(str.maketrans({'*': '_', '?': '_', '[': '_', ']': '_'}))


def check_is_run(workdir: pathlib.Path) -> None:
  """Refuses a folder that holds files but no run of this project (no checkpoints/, no
  config.json of this project's keys): training there would replace another program's
  config.json and history.jsonl. Kept teacher predictions alone are the start of a run."""
  if not workdir.is_dir() or (workdir / 'checkpoints').is_dir() or _our_config(workdir):
    return
  others = sorted(p.name for p in workdir.iterdir() if p.name not in (LOCK, TEACHER_PREDICTIONS))
  if others:
    shown = ', '.join(others[:3]) + (f' and {len(others) - 3} more' if len(others) > 3 else '')
    raise UsageError(f'{workdir} is not a run of this project (it holds {shown}, and no '
                     f'checkpoints/ or config.json of this project): train in a new or empty '
                     f'--workdir')


def _our_config(workdir: pathlib.Path) -> bool:
  """Whether workdir/config.json is a config this project wrote: every key of its top level is
  one of the config's (or one of the flat config of before the nesting)."""
  try:
    saved = json.loads((workdir / 'config.json').read_text())
  except (OSError, ValueError):
    return (workdir / 'config.json').is_file()  # damaged: load_config says so
  known = set(defaults.get_config()) | set(loading.FLAT_KEYS)
  return isinstance(saved, dict) and set(saved) <= known


@contextlib.contextmanager
def training(workdir: pathlib.Path, wait: bool) -> Iterator[bool]:
  """Holds `workdir`'s lock while the block trains, and removes it after; yields whether it
  waited for another training of the workdir to end first (with `wait`; else that is refused).
  A killed training leaves the file, but not the lock."""
  lock = workdir / LOCK
  descriptor, waited = _take(lock, wait)
  try:
    _say_holder(descriptor)
    _held.add(lock.resolve())
    yield waited
  finally:
    _held.discard(lock.resolve())
    lock.unlink(missing_ok=True)  # before the lock drops: the next training makes a new one
    os.close(descriptor)


def _say_holder(descriptor: int) -> None:
  """Writes who holds the lock into it, for the message of a training refused; on a full disk it
  stays empty (the lock works as well), and the checkpoint's save says that the disk is full."""
  try:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f'process {os.getpid()} on {socket.gethostname()}'.encode(), 0)
  except OSError as e:
    if files.known_os_error(e) is None:
      raise


def _take(lock: pathlib.Path, wait: bool) -> tuple[int, bool]:
  """A descriptor of `lock`, created if missing, locked by this process, and whether it waited
  for another process to let go of it (UsageError instead, without `wait`)."""
  waited = False
  while True:
    descriptor = _open(lock)
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(descriptor, 200, 0).decode(errors='replace').strip() or 'another process'
      if not wait:
        os.close(descriptor)
        raise UsageError(f'{lock.parent} is being trained now by {holder}: wait until it ends (or '
                         f'stop it), or train in another --workdir') from None
      if not waited:
        console.say(f'{lock.parent} is being trained now by {holder}: waiting until it ends '
                    f'(Ctrl-C stops waiting and changes nothing; or train in another --workdir)')
      waited = True
      _wait_for(descriptor)
    if _same_file(descriptor, lock):
      return descriptor, waited
    os.close(descriptor)  # removed by a training that just ended, after this one opened it


def _open(lock: pathlib.Path) -> int:
  try:
    return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UsageError(f'cannot write to the workdir {lock.parent}: '
                     f'{files.OS_ERRORS.get(e.errno, e.strerror)}') from e


def _wait_for(descriptor: int) -> None:
  """Blocks until `descriptor`'s lock is this process's; a signal's exit closes it."""
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX)
  except BaseException:
    os.close(descriptor)
    raise


def _same_file(descriptor: int, path: pathlib.Path) -> bool:
  try:
    return os.path.samestat(os.fstat(descriptor), os.stat(path))
  except FileNotFoundError:
    return False


def being_trained(workdir: str) -> bool:
  """Whether another process holds `workdir`'s training lock now."""
  lock = pathlib.Path(workdir) / LOCK
  if not lock.is_file() or lock.resolve() in _held:
    return False
  try:
    with files.locked(lock, shared=True, wait=False) as taken:
      return not taken
  except OSError:  # unreadable: no training of ours could hold it
    return False
